//! The `mha-gen` command line: `generate`, `check`, `list`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mha_gen::{GenError, Options, Templates, WriteOutcome};

/// Generates framework glue, docs pages and Rust code from mha op specs.
#[derive(Parser)]
#[command(name = "mha-gen", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Render every output into a folder (the default command).
    Generate {
        /// Output folder.
        #[arg(long, default_value = "generated")]
        out: PathBuf,
        /// Only these frameworks' glue (repeatable); default all.
        #[arg(long = "framework", value_name = "NAME")]
        frameworks: Vec<String>,
        /// Spec folder instead of the bundled specs.
        #[arg(long)]
        specs: Option<PathBuf>,
        /// Template folder instead of the bundled templates.
        #[arg(long)]
        templates: Option<PathBuf>,
    },
    /// Validate specs and print every error.
    Check {
        /// Spec folder instead of the bundled specs.
        #[arg(long)]
        specs: Option<PathBuf>,
    },
    /// List the ops and their frameworks.
    List {
        /// Spec folder instead of the bundled specs.
        #[arg(long)]
        specs: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Generate {
        out: PathBuf::from("generated"),
        frameworks: Vec::new(),
        specs: None,
        templates: None,
    });
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_specs(dir: &Option<PathBuf>) -> Result<Vec<mha_spec::Spec>, GenError> {
    Ok(match dir {
        Some(dir) => mha_spec::load_dir(dir)?,
        None => mha_spec::bundled()?,
    })
}

fn run(command: Command) -> Result<(), GenError> {
    match command {
        Command::Generate {
            out,
            frameworks,
            specs,
            templates,
        } => {
            let specs = load_specs(&specs)?;
            let templates = match templates {
                Some(dir) => Templates::from_dir(&dir)?,
                None => Templates::bundled(),
            };
            let files = mha_gen::generate(
                &specs,
                &templates,
                &Options {
                    frameworks,
                    ..Options::default()
                },
            )?;
            let outcomes = mha_gen::write_all(&out, &files)?;
            for (path, outcome) in &outcomes {
                let word = match outcome {
                    WriteOutcome::Created => "created",
                    WriteOutcome::Updated => "updated",
                    WriteOutcome::Unchanged => "unchanged",
                };
                println!("{word:>9} {}", out.join(path).display());
            }
            println!("{} files in {}", outcomes.len(), out.display());
        }
        Command::Check { specs } => {
            let specs = load_specs(&specs)?;
            for spec in &specs {
                println!(
                    "ok: {} ({} parameters, {} frameworks)",
                    spec.op,
                    spec.signature.len(),
                    spec.frameworks.len()
                );
            }
        }
        Command::List { specs } => {
            for spec in load_specs(&specs)? {
                println!("{}: {}", spec.op, spec.summary);
                for (key, fw) in &spec.frameworks {
                    println!(
                        "  {key:<12} {:<12} {:<45} {}",
                        fw.display_name,
                        fw.api,
                        fw.strategy.label()
                    );
                }
            }
        }
    }
    Ok(())
}
