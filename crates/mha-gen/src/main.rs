//! The `mha-gen` command line: `generate`, `check`, `list`, `convert`.

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
        /// Output folder [default: `generated` at the workspace root (the nearest folder up from
        /// here whose Cargo.toml has a [workspace]), else in the current folder].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these frameworks' glue (repeatable); default all.
        #[arg(long = "framework", value_name = "NAME")]
        frameworks: Vec<String>,
        /// Only these ops (repeatable; the spec's `op` name); default all.
        #[arg(long = "op", value_name = "OP")]
        ops: Vec<String>,
        /// Spec folder instead of the bundled specs.
        #[arg(long)]
        specs: Option<PathBuf>,
        /// Template folder instead of the bundled templates.
        #[arg(long)]
        templates: Option<PathBuf>,
    },
    /// Validate specs and print every error.
    Check {
        /// Only these ops (repeatable); default all.
        #[arg(long = "op", value_name = "OP")]
        ops: Vec<String>,
        /// Spec folder instead of the bundled specs.
        #[arg(long)]
        specs: Option<PathBuf>,
    },
    /// Convert a checkpoint's layers of an op to a framework's native weights (--to) or back (--from).
    ///
    /// Every layer is found by its parameter names under any prefix (`layers.0.self_attn.`); what
    /// the tensors cannot tell comes from --set. Every other tensor is copied unchanged. The
    /// format (.safetensors or .npz) follows each file's extension.
    Convert(ConvertArgs),
    /// List the ops and their frameworks.
    List {
        /// Only these ops (repeatable); default all.
        #[arg(long = "op", value_name = "OP")]
        ops: Vec<String>,
        /// Spec folder instead of the bundled specs.
        #[arg(long)]
        specs: Option<PathBuf>,
    },
}

/// The arguments of `mha-gen convert`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["to", "from"])))]
struct ConvertArgs {
    /// Convert from the reference layout to this framework's names and shapes.
    #[arg(long, value_name = "FRAMEWORK")]
    to: Option<String>,
    /// Convert from this framework's names and shapes to the reference layout.
    #[arg(long, value_name = "FRAMEWORK")]
    from: Option<String>,
    /// The checkpoint to read.
    input: PathBuf,
    /// The checkpoint to write.
    output: PathBuf,
    /// A constructor parameter, for every layer (`num_heads=6`) or one (`layers.1.self_attn.num_heads=4`).
    #[arg(long = "set", value_name = "[PREFIX]PARAM=VALUE")]
    settings: Vec<mha_gen::convert::Setting>,
    /// A prefix to copy unchanged although its tensors look like a layer of the op (repeatable).
    #[arg(long, value_name = "PREFIX")]
    keep: Vec<String>,
    /// The op to convert (needed when the specs hold several).
    #[arg(long)]
    op: Option<String>,
    /// Spec folder instead of the bundled specs.
    #[arg(long)]
    specs: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Generate {
        out: None,
        frameworks: Vec::new(),
        ops: Vec::new(),
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
            ops,
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
                    ops,
                    ..Options::default()
                },
            )?;
            let out = out.unwrap_or_else(default_out);
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
        Command::Check { ops, specs } => {
            let specs = load_specs(&specs)?;
            for spec in mha_gen::select_ops(&specs, &ops)? {
                let what = match spec.kind {
                    mha_spec::OpKind::Layer => {
                        format!("a layer, {} parameters", spec.signature.len())
                    }
                    mha_spec::OpKind::Function => {
                        format!("a function, {} call arguments", spec.call.args.len())
                    }
                };
                println!(
                    "ok: {} ({what}, {} frameworks)",
                    spec.op,
                    spec.frameworks.len()
                );
            }
        }
        Command::Convert(args) => convert(args)?,
        Command::List { ops, specs } => {
            let specs = load_specs(&specs)?;
            for spec in mha_gen::select_ops(&specs, &ops)? {
                println!(
                    "{} ({}, glue package {}.{}): {}",
                    spec.op,
                    match spec.kind {
                        mha_spec::OpKind::Layer => "layer",
                        mha_spec::OpKind::Function => "function",
                    },
                    mha_gen::PYTHON_PACKAGE,
                    mha_gen::snake_case(&spec.op),
                    spec.summary
                );
                for (key, fw) in &spec.frameworks {
                    println!(
                        "  {key:<12} {:<12} {:<48} {}",
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

/// `generated` at the workspace root: the nearest folder up from the current one whose
/// `Cargo.toml` declares a `[workspace]`; the current folder when there is none.
fn default_out() -> PathBuf {
    let here = std::env::current_dir().unwrap_or_default();
    let root = here.ancestors().find(|dir| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
    });
    root.unwrap_or(&here).join("generated")
}

/// `mha-gen convert`: converts, then prints what it converted.
fn convert(args: ConvertArgs) -> Result<(), GenError> {
    use mha_gen::convert::{ConvertError, ConvertOptions, Direction};
    let ConvertArgs {
        to,
        from,
        input,
        output,
        settings,
        keep,
        op,
        specs,
    } = args;
    let specs = load_specs(&specs)?;
    // Only layers have weights to convert.
    let layers: Vec<&mha_spec::Spec> = specs
        .iter()
        .filter(|s| !s.weights.tensors.is_empty())
        .collect();
    let spec = match (&op, layers.as_slice()) {
        (None, [only]) => *only,
        _ => {
            let ops: Vec<&str> = layers.iter().map(|s| s.op.as_str()).collect();
            let wanted = op.as_deref().unwrap_or_default();
            layers
                .iter()
                .copied()
                .find(|s| s.op == wanted)
                .ok_or_else(|| {
                    ConvertError::Usage(format!(
                        "{}; the ops are: {}",
                        match &op {
                            Some(o) => format!(
                                "no op with weights `{o}`{}",
                                mha_spec::did_you_mean(o, ops.iter().copied())
                            ),
                            None => "several ops have weights: pick one with --op".to_string(),
                        },
                        ops.join(", ")
                    ))
                })?
        }
    };
    let (direction, framework) = match (to, from) {
        (Some(fw), None) => (Direction::To, fw),
        (None, Some(fw)) => (Direction::From, fw),
        _ => {
            let usage = "give exactly one of --to and --from".to_string();
            return Err(ConvertError::Usage(usage).into());
        }
    };
    let options = ConvertOptions {
        direction,
        framework,
        settings,
        keep,
    };
    let done = mha_gen::convert::convert_file(spec, &input, &output, &options)?;
    let (source, target) = match direction {
        Direction::To => (spec.reference.as_str(), options.framework.as_str()),
        Direction::From => (options.framework.as_str(), spec.reference.as_str()),
    };
    let list = |tensors: &[(String, Vec<usize>)]| {
        tensors
            .iter()
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for layer in &done.layers {
        println!(
            "converted `{}` {}({}) {source} -> {target}",
            layer.prefix,
            spec.op,
            layer.params.join(", ")
        );
        println!("    read  {}", list(&layer.read));
        println!("    wrote {}", list(&layer.written));
    }
    println!(
        "{} layer{} converted, {} other tensor{} copied unchanged: wrote {}",
        done.layers.len(),
        if done.layers.len() == 1 { "" } else { "s" },
        done.copied.len(),
        if done.copied.len() == 1 { "" } else { "s" },
        output.display()
    );
    Ok(())
}
