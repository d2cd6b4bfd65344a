//! `mha-gen convert`: spec-driven checkpoint conversion, on the torch TransformerEncoder checkpoint
//! (made by real torch, tests/fixtures/torch_checkpoint) and on hand-made layers of every shape.

use std::path::{Path, PathBuf};
use std::process::Command;

use mha_gen::convert::{
    convert, convert_file, Checkpoint, ConvertOptions, Direction, Format, RawTensor,
};
use safetensors::Dtype;

const FRAMEWORKS: [&str; 5] = ["pytorch", "keras", "tensorflow", "mlx", "flax_nnx"];

fn spec() -> mha_spec::Spec {
    mha_spec::bundled().expect("bundled specs").remove(0)
}

fn encoder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/torch_checkpoint/encoder.safetensors")
}

fn options(direction: Direction, framework: &str, settings: &[&str]) -> ConvertOptions {
    ConvertOptions {
        direction,
        framework: framework.into(),
        settings: settings
            .iter()
            .map(|s| s.parse().expect("a setting"))
            .collect(),
        keep: Vec::new(),
    }
}

fn read(path: &Path) -> Checkpoint {
    let bytes = std::fs::read(path).expect("read checkpoint");
    Checkpoint::from_bytes(&bytes, Format::of(path).expect("format")).expect("parse")
}

fn f32s(t: &RawTensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A tensor of `shape` whose elements are `seed + 0.001 * index` (every element distinct).
fn tensor(shape: &[usize], seed: f32) -> RawTensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .flat_map(|i| (seed + 0.001 * i as f32).to_le_bytes())
        .collect();
    RawTensor::new(Dtype::F32, shape.to_vec(), data).unwrap()
}

#[test]
fn the_torch_encoder_goes_to_every_framework_and_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let input = read(&encoder());
    for fw in FRAMEWORKS {
        for ext in ["safetensors", "npz"] {
            let native = dir.path().join(format!("{fw}.{ext}"));
            let back = dir.path().join(format!("{fw}.back.{ext}"));
            let to = convert_file(
                &spec(),
                &encoder(),
                &native,
                &options(Direction::To, fw, &["num_heads=4"]),
            )
            .unwrap_or_else(|e| panic!("--to {fw}: {e}"));
            assert_eq!(to.layers.len(), 2, "{fw}");
            assert_eq!(
                to.copied.len(),
                16,
                "{fw}: linear1/2 and norm1/2 of both layers"
            );
            let from = convert_file(
                &spec(),
                &native,
                &back,
                &options(Direction::From, fw, &["num_heads=4"]),
            )
            .unwrap_or_else(|e| panic!("--from {fw}: {e}"));
            assert_eq!(from.layers.len(), 2);
            let mut got = read(&back).tensors;
            let mut want = input.tensors.clone();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "{fw} .{ext}: the round trip changed a tensor");
        }
    }
    // safetensors to safetensors: the very same bytes.
    let native = dir.path().join("k.safetensors");
    let back = dir.path().join("k.back.safetensors");
    convert_file(
        &spec(),
        &encoder(),
        &native,
        &options(Direction::To, "keras", &["num_heads=4"]),
    )
    .unwrap();
    convert_file(
        &spec(),
        &native,
        &back,
        &options(Direction::From, "keras", &[]),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(encoder()).unwrap()
    );
}

#[test]
fn keras_kernels_hold_the_transposed_per_head_projections() {
    let input = read(&encoder());
    let out = convert(
        &spec(),
        &input,
        &options(Direction::To, "keras", &["num_heads=4"]),
    )
    .unwrap();
    let w = f32s(input.get("layers.1.self_attn.in_proj_weight").unwrap()); // (48, 16): [W_q; W_k; W_v]
    let (e, h, d) = (16, 4, 4);
    for (name, block) in [("query_dense", 0), ("key_dense", 1), ("value_dense", 2)] {
        let k = out
            .checkpoint
            .get(&format!("layers.1.self_attn.{name}.kernel"))
            .unwrap();
        assert_eq!(k.shape, [e, h, d]);
        let k = f32s(k);
        for i in 0..e {
            for head in 0..h {
                for j in 0..d {
                    let row = block * e + head * d + j;
                    assert_eq!(
                        k[(i * h + head) * d + j],
                        w[row * e + i],
                        "{name}[{i}, {head}, {j}]"
                    );
                }
            }
        }
    }
    let o = out
        .checkpoint
        .get("layers.1.self_attn.output_dense.kernel")
        .unwrap();
    assert_eq!(o.shape, [h, d, e]);
    let wo = f32s(input.get("layers.1.self_attn.out_proj.weight").unwrap());
    assert_eq!(f32s(o)[(2 * d + 1) * e + 5], wo[5 * e + 2 * d + 1]);
    // The other tensors are copied unchanged, in place.
    assert_eq!(
        out.checkpoint.get("layers.0.linear1.weight"),
        input.get("layers.0.linear1.weight")
    );
}

/// Two layers that differ in every way the weights show: separate projections (kdim 3, vdim 5),
/// no bias, bias_k/bias_v, other head counts; plus a tensor of the model around them.
fn mixed_checkpoint() -> Checkpoint {
    let mut tensors = vec![
        ("embed.weight".to_string(), tensor(&[10, 8], 9.0)),
        ("enc.attn.q_proj_weight".to_string(), tensor(&[8, 8], 1.0)),
        ("enc.attn.k_proj_weight".to_string(), tensor(&[8, 3], 2.0)),
        ("enc.attn.v_proj_weight".to_string(), tensor(&[8, 5], 3.0)),
        ("enc.attn.bias_k".to_string(), tensor(&[1, 1, 8], 4.0)),
        ("enc.attn.bias_v".to_string(), tensor(&[1, 1, 8], 5.0)),
        ("enc.attn.out_proj.weight".to_string(), tensor(&[8, 8], 6.0)),
    ];
    tensors.extend([
        ("dec.attn.in_proj_weight".to_string(), tensor(&[24, 8], 7.0)),
        ("dec.attn.in_proj_bias".to_string(), tensor(&[24], 8.0)),
        (
            "dec.attn.out_proj.weight".to_string(),
            tensor(&[8, 8], 10.0),
        ),
        ("dec.attn.out_proj.bias".to_string(), tensor(&[8], 11.0)),
    ]);
    Checkpoint {
        tensors,
        metadata: None,
    }
}

#[test]
fn layers_that_differ_convert_with_their_own_settings_and_come_back_exactly() {
    let input = mixed_checkpoint();
    for fw in FRAMEWORKS {
        let settings = ["num_heads=2", "dec.attn.num_heads=4"];
        let to = convert(&spec(), &input, &options(Direction::To, fw, &settings))
            .unwrap_or_else(|e| panic!("--to {fw}: {e}"));
        let enc = to.layers.iter().find(|l| l.prefix == "enc.attn.").unwrap();
        for p in ["kdim=3", "vdim=5", "bias=false", "add_bias_kv=true"] {
            assert!(
                enc.params.iter().any(|q| q == p),
                "{fw}: {p} not in {:?}",
                enc.params
            );
        }
        let back = convert(
            &spec(),
            &to.checkpoint,
            &options(Direction::From, fw, &settings),
        )
        .unwrap_or_else(|e| panic!("--from {fw}: {e}"));
        let mut got = back.checkpoint.tensors;
        let mut want = input.tensors.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{fw}");
    }
    let flax = convert(
        &spec(),
        &input,
        &options(
            Direction::To,
            "flax_nnx",
            &["num_heads=2", "dec.attn.num_heads=4"],
        ),
    )
    .unwrap();
    let shape = |n: &str| flax.checkpoint.get(n).map(|t| t.shape.clone());
    assert_eq!(shape("enc.attn.key.kernel"), Some(vec![3, 2, 4]));
    assert_eq!(shape("enc.attn.value.kernel"), Some(vec![5, 2, 4]));
    assert_eq!(shape("enc.attn.key.bias_k"), Some(vec![2, 4]));
    assert_eq!(
        shape("enc.attn.query.bias"),
        None,
        "bias=false has no biases"
    );
    assert_eq!(shape("dec.attn.query.kernel"), Some(vec![8, 4, 2]));
    assert_eq!(
        flax.checkpoint.tensors[0].0, "embed.weight",
        "file order is kept"
    );
}

fn error(input: &Checkpoint, options: &ConvertOptions) -> String {
    convert(&spec(), input, options).unwrap_err().to_string()
}

#[test]
fn what_the_tensors_cannot_tell_is_asked_for() {
    let e = error(&read(&encoder()), &options(Direction::To, "keras", &[]));
    assert_eq!(
        e,
        "layer `layers.0.self_attn.`: `num_heads` cannot be read from the tensors: pass --set \
         num_heads=VALUE (every layer) or --set layers.0.self_attn.num_heads=VALUE (this layer)"
    );
    // MLX's weights do not depend on num_heads: none is needed.
    convert(
        &spec(),
        &read(&encoder()),
        &options(Direction::To, "mlx", &[]),
    )
    .unwrap();
}

#[test]
fn bad_settings_are_named() {
    let input = read(&encoder());
    let e = error(&input, &options(Direction::To, "keras", &["num_head=4"]));
    assert!(
        e.contains("has no parameter `num_head` (did you mean `num_heads`?)"),
        "{e}"
    );
    let e = error(
        &input,
        &options(Direction::To, "keras", &["layers.3.self_attn.num_heads=4"]),
    );
    assert!(e.contains("no MultiheadAttention layer has the prefix `layers.3.self_attn.` (did you mean `layers.0.self_attn.`?)"), "{e}");
    let e = error(
        &input,
        &options(Direction::To, "keras", &["num_heads=four"]),
    );
    assert!(
        e.ends_with("`num_heads` takes a non-negative integer"),
        "{e}"
    );
    let e = error(&input, &options(Direction::To, "keras", &["num_heads=5"]));
    assert!(
        e.contains("MultiheadAttention: `num_heads` must divide `embed_dim` (16), got 5"),
        "{e}"
    );
    let e = error(&input, &options(Direction::To, "kera", &["num_heads=4"]));
    assert!(
        e.starts_with("unknown framework `kera` (did you mean `keras`?)"),
        "{e}"
    );
    assert!("num_heads".parse::<mha_gen::convert::Setting>().is_err());
    // A prefix's setting wins over the global one; a wrong one shows in the shapes.
    let e = error(
        &input,
        &options(
            Direction::To,
            "mlx",
            &["embed_dim=16", "layers.1.self_attn.embed_dim=12"],
        ),
    );
    assert!(
        e.starts_with("layer `layers.1.self_attn.`: its tensors fit no MultiheadAttention"),
        "{e}"
    );
}

#[test]
fn a_layer_that_fits_no_config_is_an_error_unless_kept() {
    let mut input = mixed_checkpoint();
    input.tensors[1].1 = tensor(&[8, 7], 1.0); // enc.attn.q_proj_weight (8, 7): not (embed_dim, embed_dim)
    let mut opts = options(Direction::To, "mlx", &[]);
    let e = error(&input, &opts);
    assert!(e.starts_with("layer `enc.attn.`: its tensors fit no MultiheadAttention: `q_proj_weight` has shape [8, 7], expected [8, 8] (embed_dim, embed_dim)"), "{e}");
    assert!(
        e.ends_with("pass --keep enc.attn. to copy it unchanged)"),
        "{e}"
    );
    opts.keep = vec!["enc.attn.".into()];
    let out = convert(&spec(), &input, &opts).unwrap();
    assert_eq!(out.layers.len(), 1);
    assert!(out.copied.iter().any(|n| n == "enc.attn.q_proj_weight"));
    // A checkpoint without the op.
    let plain = Checkpoint {
        tensors: vec![("linear.weight".into(), tensor(&[2, 2], 0.0))],
        metadata: None,
    };
    let e = error(&plain, &options(Direction::To, "mlx", &[]));
    assert!(!e.contains("another layout"), "{e}");
    // A file already in a framework's layout: the right direction is suggested.
    let keras = convert(
        &spec(),
        &read(&encoder()),
        &options(Direction::To, "keras", &["num_heads=4"]),
    )
    .unwrap()
    .checkpoint;
    let e = error(&keras, &options(Direction::To, "mlx", &[]));
    assert!(
        e.ends_with("in another layout: try --from keras or --from tensorflow"),
        "{e}"
    );
    // Torch's file read as MLX's: MLX's out_proj names are torch's, the rest is missing.
    let e = error(&read(&encoder()), &options(Direction::From, "mlx", &[]));
    assert!(
        e.starts_with("layer `layers.0.self_attn.`: its tensors fit no MultiheadAttention: `query_proj.weight` is missing;"),
        "{e}"
    );
    assert!(e.ends_with("in another layout: try --to"), "{e}");
    let e = error(&plain, &options(Direction::To, "mlx", &[]));
    assert!(
        e.starts_with(
            "no MultiheadAttention layer found: no prefix holds its parameters (in_proj_weight, "
        ),
        "{e}"
    );
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(Direction::To, "mlx", &[]);
    let out = dir.path().join("out.safetensors");
    for (name, bytes) in [
        ("a.safetensors", &b"\x10\x00\x00\x00\x00\x00\x00\x00{}"[..]),
        ("b.npz", &b"PK\x03\x04 not a zip"[..]),
        ("c.safetensors", &[][..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = convert_file(&spec(), &path, &out, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }
    let e = convert_file(&spec(), &encoder(), &dir.path().join("out.pt"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("unknown checkpoint format (the name must end in .safetensors or .npz)"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written when a conversion fails");
}

#[test]
fn the_command_prints_what_it_converted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flax.npz");
    let run = Command::new(env!("CARGO_BIN_EXE_mha-gen"))
        .args(["convert", "--to", "flax_nnx", "--set", "num_heads=4"])
        .arg(encoder())
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.starts_with("converted `layers.0.self_attn.` MultiheadAttention(embed_dim=16, num_heads=4, bias=true, add_bias_kv=false, kdim=16, vdim=16) pytorch -> flax_nnx\n"), "{stdout}");
    assert!(
        stdout.contains("    wrote query.kernel [16, 4, 4], query.bias [4, 4], "),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!(
            "2 layers converted, 16 other tensors copied unchanged: wrote {}\n",
            out.display()
        )),
        "{stdout}"
    );
    let run = Command::new(env!("CARGO_BIN_EXE_mha-gen"))
        .args(["convert", "--to", "keras"])
        .arg(encoder())
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr)
        .starts_with("error: layer `layers.0.self_attn.`: `num_heads` cannot be read"));
}

#[test]
fn any_dtype_moves_exactly() {
    // The encoder in bfloat16 (the upper halves of its float32 values) and in float64.
    let input = read(&encoder());
    for (dtype, width) in [(Dtype::BF16, 2usize), (Dtype::F64, 8)] {
        let cast = Checkpoint {
            tensors: input
                .tensors
                .iter()
                .map(|(n, t)| {
                    let data = f32s(t)
                        .into_iter()
                        .flat_map(|v| match dtype {
                            Dtype::BF16 => ((v.to_bits() >> 16) as u16).to_le_bytes().to_vec(),
                            _ => f64::from(v).to_le_bytes().to_vec(),
                        })
                        .collect::<Vec<u8>>();
                    assert_eq!(data.len(), t.data.len() / 4 * width);
                    (
                        n.clone(),
                        RawTensor::new(dtype, t.shape.clone(), data).unwrap(),
                    )
                })
                .collect(),
            metadata: None,
        };
        let to = convert(
            &spec(),
            &cast,
            &options(Direction::To, "flax_nnx", &["num_heads=4"]),
        )
        .unwrap();
        assert!(to.checkpoint.tensors.iter().all(|(_, t)| t.dtype == dtype));
        let back = convert(
            &spec(),
            &to.checkpoint,
            &options(Direction::From, "flax_nnx", &[]),
        )
        .unwrap();
        let mut got = back.checkpoint.tensors;
        let mut want = cast.tensors.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{dtype:?}");
    }
}
