//! The `#[attention_layer]` layer against the dynamic runtime layer on every torch fixture case in
//! `tests/fixtures/torch`: loaded from the same file, given the same inputs, they give
//! bit-identical outputs and weights (on the fast path and on the reference path), and both match torch's reference within the fixtures'
//! tolerance. Also the layers as users write them (the modules `basic`, `every_argument`,
//! `hygiene` at the end): they compile in this test crate, a user crate of `mha` like any other,
//! and work.

// For the `hygiene` module: the facade under another name.
extern crate mha as attention;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mha::ndarray::{ArrayD, ArrayViewD, IxDyn};
use mha::{
    attention_layer, AttentionLayer, AttentionOutput, ForwardOptions, Mask, MhaError,
    MultiheadAttention, MultiheadAttentionConfig,
};
use mha_parity::mha::{load_index, FixtureCase};
use mha_parity::{compare, Tolerance};
use safetensors::{Dtype, SafeTensors};

// One layer type per constructor config of the fixture set.
#[attention_layer(embed_dim = 16, num_heads = 4)]
struct SeqFirst;
#[attention_layer(embed_dim = 16, num_heads = 4, batch_first = true)]
struct BatchFirst;
#[attention_layer(embed_dim = 16, num_heads = 4, bias = false)]
struct NoBias;
#[attention_layer(embed_dim = 16, num_heads = 1, batch_first = true)]
struct OneHead;
#[attention_layer(embed_dim = 4, num_heads = 4)]
struct HeadDimOne;
#[attention_layer(embed_dim = 4, num_heads = 4, batch_first = true)]
struct HeadDimOneBatchFirst;
#[attention_layer(embed_dim = 16, num_heads = 4, kdim = 10, vdim = 12)]
struct KdimVdim;
#[attention_layer(embed_dim = 16, num_heads = 4, kdim = 6, vdim = 20, batch_first = true)]
struct KdimVdimBatchFirst;
#[attention_layer(embed_dim = 16, num_heads = 4, bias = false, kdim = 12, vdim = 8)]
struct KdimVdimNoBias;
#[attention_layer(embed_dim = 16, num_heads = 4, add_bias_kv = true)]
struct BiasKv;
#[attention_layer(
    embed_dim = 16,
    num_heads = 4,
    add_zero_attn = true,
    batch_first = true
)]
struct ZeroAttnBatchFirst;
#[attention_layer(embed_dim = 16, num_heads = 4, add_zero_attn = true)]
struct ZeroAttn;
#[attention_layer(
    embed_dim = 16,
    num_heads = 4,
    add_bias_kv = true,
    add_zero_attn = true
)]
struct BiasKvZeroAttn;
#[attention_layer(embed_dim = 16, num_heads = 4, add_bias_kv = true, bias = false)]
struct BiasKvNoBias;
#[attention_layer(embed_dim = 16, num_heads = 4, dropout = 0.5)]
struct Dropout05;
#[attention_layer(embed_dim = 16, num_heads = 4, dropout = 0.3, batch_first = true)]
struct Dropout03BatchFirst;
#[attention_layer(embed_dim = 64, num_heads = 8, batch_first = true)]
struct E64BatchFirst;
#[attention_layer(embed_dim = 64, num_heads = 8)]
struct E64;
#[attention_layer(embed_dim = 128, num_heads = 4)]
struct E128;
#[attention_layer(embed_dim = 128, num_heads = 4, batch_first = true)]
struct E128BatchFirst;

/// A macro layer behind one object: the runtime trait's `forward` and the generated type's own
/// `forward_reference`.
trait StaticLayer: AttentionLayer {
    fn reference(
        &self,
        query: ArrayViewD<'_, f32>,
        key: ArrayViewD<'_, f32>,
        value: ArrayViewD<'_, f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<AttentionOutput, MhaError>;
}

macro_rules! static_layers {
    ($($layer:ident),*) => {
        $(
            impl StaticLayer for $layer {
                fn reference(
                    &self,
                    query: ArrayViewD<'_, f32>,
                    key: ArrayViewD<'_, f32>,
                    value: ArrayViewD<'_, f32>,
                    options: &ForwardOptions<'_>,
                ) -> Result<AttentionOutput, MhaError> {
                    self.forward_reference(query, key, value, options)
                }
            }
        )*

        /// The macro layer whose `CONFIG` is `config`, built from `params`; `None` if no type has it.
        fn static_layer(
            config: &MultiheadAttentionConfig,
            params: Vec<(String, ArrayD<f32>)>,
        ) -> Option<Result<Box<dyn StaticLayer>, MhaError>> {
            $(
                if $layer::CONFIG == *config {
                    let layer = $layer::from_tensors(params);
                    return Some(layer.map(|l| Box::new(l) as Box<dyn StaticLayer>));
                }
            )*
            None
        }
    };
}

static_layers!(
    SeqFirst,
    BatchFirst,
    NoBias,
    OneHead,
    HeadDimOne,
    HeadDimOneBatchFirst,
    KdimVdim,
    KdimVdimBatchFirst,
    KdimVdimNoBias,
    BiasKv,
    ZeroAttnBatchFirst,
    ZeroAttn,
    BiasKvZeroAttn,
    BiasKvNoBias,
    Dropout05,
    Dropout03BatchFirst,
    E64BatchFirst,
    E64,
    E128,
    E128BatchFirst
);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

/// A tensor of a fixture file.
enum Tensor {
    Float(ArrayD<f32>),
    Bool(ArrayD<bool>),
}

fn read_tensors(path: &Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = IxDyn(view.shape());
            let tensor = match view.dtype() {
                Dtype::F32 => Tensor::Float(
                    ArrayD::from_shape_vec(
                        shape,
                        view.data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    )
                    .expect("data fits the shape"),
                ),
                Dtype::BOOL => Tensor::Bool(
                    ArrayD::from_shape_vec(shape, view.data().iter().map(|&b| b != 0).collect())
                        .expect("data fits the shape"),
                ),
                other => panic!("{name}: unexpected dtype {other:?} in a fixture"),
            };
            (name, tensor)
        })
        .collect()
}

fn float<'a>(tensors: &'a BTreeMap<String, Tensor>, name: &str) -> &'a ArrayD<f32> {
    match tensors.get(name) {
        Some(Tensor::Float(t)) => t,
        _ => panic!("fixture has no float tensor `{name}`"),
    }
}

fn mask<'a>(tensors: &'a BTreeMap<String, Tensor>, name: &str) -> Option<Mask<'a>> {
    match tensors.get(name)? {
        Tensor::Float(t) => Some(Mask::Float(t.view())),
        Tensor::Bool(t) => Some(Mask::Bool(t.view())),
    }
}

/// Same shape and the same bits everywhere (NaN included).
fn bit_identical(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Runs one case through both layers; returns what went wrong, if anything.
fn check_case(case: &FixtureCase) -> Vec<String> {
    let tensors = read_tensors(&fixtures().join(&case.file));
    let params: Vec<(String, ArrayD<f32>)> = case
        .params
        .iter()
        .map(|n| (n.clone(), float(&tensors, n).clone()))
        .collect();
    let config = case.ctor.config();
    let Some(static_layer) = static_layer(&config, params.clone()) else {
        return vec![format!(
            "no #[attention_layer] type has the config {config:?}"
        )];
    };
    let static_layer = static_layer.expect("the fixture's parameters load into the macro layer");
    let dynamic = MultiheadAttention::from_tensors(config, params)
        .expect("the fixture's parameters load into the dynamic layer");

    let mut options = ForwardOptions::default()
        .with_need_weights(case.forward.need_weights)
        .with_average_attn_weights(case.forward.average_attn_weights)
        .with_is_causal(case.forward.is_causal);
    options.key_padding_mask = mask(&tensors, "key_padding_mask");
    options.attn_mask = mask(&tensors, "attn_mask");
    let (q, k, v) = (
        float(&tensors, "query"),
        float(&tensors, "key"),
        float(&tensors, "value"),
    );
    let ours: AttentionOutput = static_layer
        .forward(q.view(), k.view(), v.view(), &options)
        .expect("macro forward");
    let theirs = dynamic
        .forward(q.view(), k.view(), v.view(), &options)
        .expect("dynamic forward");

    let ours_reference = static_layer
        .reference(q.view(), k.view(), v.view(), &options)
        .expect("macro forward_reference");
    let theirs_reference = dynamic
        .forward_reference(q.view(), k.view(), v.view(), &options)
        .expect("dynamic forward_reference");

    let mut problems = Vec::new();
    for (path, ours, theirs) in [
        ("forward", &ours, &theirs),
        ("forward_reference", &ours_reference, &theirs_reference),
    ] {
        if !bit_identical(&ours.output, &theirs.output) {
            problems.push(format!(
                "{path}: attn_output differs from the dynamic layer's"
            ));
        }
        match (&ours.weights, &theirs.weights) {
            (Some(a), Some(b)) if !bit_identical(a, b) => problems.push(format!(
                "{path}: attn_weights differ from the dynamic layer's"
            )),
            (Some(_), None) | (None, Some(_)) => {
                problems.push(format!("{path}: only one layer gave weights"))
            }
            _ => {}
        }
    }
    let torch = compare(
        ours.output.view(),
        float(&tensors, "attn_output").view(),
        Tolerance::default(),
    );
    if !torch.as_ref().is_some_and(|c| c.passed()) {
        problems.push(format!("attn_output does not match torch: {torch:?}"));
    }
    problems
}

#[test]
fn macro_and_dynamic_layers_agree_bit_for_bit_on_every_fixture() {
    let index = load_index(fixtures()).expect("tests/fixtures/torch/index.json loads");
    assert!(index.cases.len() >= 50, "the fixture set is complete");
    let failures: Vec<String> = index
        .cases
        .iter()
        .flat_map(|case| {
            check_case(case)
                .into_iter()
                .map(move |p| format!("{}: {p}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn loading_checks_the_parameters_against_the_constants() {
    let index = load_index(fixtures()).unwrap();
    let case = index.cases.iter().find(|c| c.name == "kdim_vdim").unwrap();
    let tensors = read_tensors(&fixtures().join(&case.file));
    let params: Vec<(String, ArrayD<f32>)> = case
        .params
        .iter()
        .map(|n| (n.clone(), float(&tensors, n).clone()))
        .collect();
    assert!(KdimVdim::from_tensors(params.clone()).is_ok());
    // The packed layer with the same embed_dim expects in_proj_weight, not q/k/v_proj_weight.
    let error = SeqFirst::from_tensors(params)
        .err()
        .expect("a packed layer refuses separate projections")
        .to_string();
    assert!(
        error.starts_with("unexpected weight `k_proj_weight`") && error.contains("in_proj_weight"),
        "{error}"
    );

    // A fixture file also holds the inputs and outputs: not a plain state_dict.
    let error = KdimVdim::from_safetensors(fixtures().join(&case.file))
        .err()
        .expect("extra tensors are refused")
        .to_string();
    assert!(error.contains("unexpected weight"), "{error}");
}

#[test]
fn safetensors_round_trip_between_the_two_layers() {
    let dynamic = MultiheadAttention::random(BiasKvZeroAttn::CONFIG, 11).unwrap();
    let dir = std::env::temp_dir().join(format!("mha_macro_parity_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("layer.safetensors");
    dynamic.save_safetensors(&path).unwrap();
    let layer = BiasKvZeroAttn::from_safetensors(&path).unwrap();
    assert_eq!(layer.weights(), dynamic.weights());

    let bytes = dynamic.to_safetensors_bytes().unwrap();
    let prefixed = BiasKvZeroAttn::from_safetensors_bytes(&bytes, "").unwrap();
    assert_eq!(prefixed.as_dynamic(), &dynamic);

    let saved = dir.join("again.safetensors");
    layer.save_safetensors(&saved).unwrap();
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(&path).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(BiasKvZeroAttn::random(11).into_dynamic(), dynamic);
    assert_eq!(
        BiasKvZeroAttn::PARAMETER_SHAPES
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect::<Vec<_>>(),
        MultiheadAttention::random(BiasKvZeroAttn::CONFIG, 0)
            .unwrap()
            .weights()
            .state_dict()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect::<Vec<_>>(),
    );
}

/// The self-attention of a torch `nn.TransformerEncoderLayer(d_model=16, nhead=4, batch_first=True)`.
#[attention_layer(embed_dim = 16, num_heads = 4, dropout = 0.1, batch_first = true)]
struct EncoderSelfAttention;

#[test]
fn one_layer_of_a_torch_checkpoint_by_prefix() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_checkpoint");
    let checkpoint = dir.join("encoder.safetensors");
    let prefix = "layers.1.self_attn.";
    let layer = EncoderSelfAttention::from_safetensors_with_prefix(&checkpoint, prefix).unwrap();
    let dynamic =
        MultiheadAttention::from_safetensors(EncoderSelfAttention::CONFIG, &checkpoint, prefix)
            .unwrap();
    let expected = read_tensors(&dir.join("expected.safetensors"));
    let x = float(&expected, "query");
    let options = ForwardOptions::default().with_average_attn_weights(false);
    let ours = layer
        .forward(x.view(), x.view(), x.view(), &options)
        .unwrap();
    let theirs = dynamic
        .forward(x.view(), x.view(), x.view(), &options)
        .unwrap();
    assert!(bit_identical(&ours.output, &theirs.output));
    let (w, w_dynamic) = (ours.weights.unwrap(), theirs.weights.unwrap());
    assert!(bit_identical(&w, &w_dynamic));
    for (got, want) in [(&ours.output, "attn_output"), (&w, "attn_weights")] {
        let c = compare(
            got.view(),
            float(&expected, want).view(),
            Tolerance::default(),
        );
        assert!(c.as_ref().is_some_and(|c| c.passed()), "{want}: {c:?}");
    }
    // The whole checkpoint is not one layer.
    let error = EncoderSelfAttention::from_safetensors(&checkpoint)
        .err()
        .expect("the other tensors are refused")
        .to_string();
    assert!(
        error.starts_with("unexpected weight `layers.0.linear1.bias`"),
        "{error}"
    );
}

#[test]
fn a_dynamic_layer_converts_only_with_the_same_config() {
    let dynamic = MultiheadAttention::random(KdimVdim::CONFIG, 5).unwrap();
    let layer = KdimVdim::try_from(dynamic.clone()).unwrap();
    assert_eq!(layer.as_dynamic(), &dynamic);

    let other =
        MultiheadAttention::random(KdimVdim::CONFIG.with_batch_first(true).with_dropout(0.5), 5)
            .unwrap();
    let error = KdimVdim::try_from(other)
        .err()
        .expect("another config is refused")
        .to_string();
    assert_eq!(
        error,
        "MultiheadAttention: `dropout` must be 0.0 as `KdimVdim` declares, got 0.5; \
         MultiheadAttention: `batch_first` must be false as `KdimVdim` declares, got true"
    );
}

/// The spec's defaults, the constants usable at compile time, forward through the runtime trait.
mod basic {
    use mha::ndarray::ArrayD;
    use mha::{attention_layer, AttentionLayer, ForwardOptions, MultiheadAttentionConfig};

    /// A documented, public layer with derives.
    #[attention_layer(embed_dim = 16, num_heads = 4)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Encoder;

    const PER_HEAD: [f32; Encoder::HEAD_DIM] = [0.0; Encoder::HEAD_DIM];

    fn output_of(layer: &dyn AttentionLayer, x: &ArrayD<f32>) -> ArrayD<f32> {
        let options = ForwardOptions::default().with_need_weights(false);
        layer
            .forward(x.view(), x.view(), x.view(), &options)
            .unwrap()
            .output
    }

    #[test]
    fn defaults_constants_and_the_trait() {
        assert_eq!(PER_HEAD.len(), 4);
        assert_eq!(
            (Encoder::EMBED_DIM, Encoder::NUM_HEADS, Encoder::HEAD_DIM),
            (16, 4, 4)
        );
        assert_eq!((Encoder::KDIM, Encoder::VDIM), (16, 16));
        assert_eq!(Encoder::DROPOUT, 0.0);
        const {
            assert!(
                Encoder::BIAS
                    && !Encoder::ADD_BIAS_KV
                    && !Encoder::ADD_ZERO_ATTN
                    && !Encoder::BATCH_FIRST
            )
        };
        const { assert!(Encoder::PACKED_IN_PROJ) };
        assert_eq!(Encoder::EXTRA_KEYS, 0);
        assert_eq!(Encoder::CONFIG, MultiheadAttentionConfig::new(16, 4));

        let layer = Encoder::random(7);
        assert_eq!(layer.clone(), layer);
        assert_eq!(AttentionLayer::config(&layer), &Encoder::CONFIG);
        let x = ArrayD::<f32>::ones(vec![5, 2, 16]); // (L, N, E)
        let out = layer
            .forward(x.view(), x.view(), x.view(), &ForwardOptions::default())
            .unwrap();
        assert_eq!(out.output.shape(), &[5, 2, 16]);
        let options = ForwardOptions::default().with_need_weights(false);
        let direct = layer
            .forward(x.view(), x.view(), x.view(), &options)
            .unwrap();
        assert_eq!(output_of(&layer, &x), direct.output); // the trait and the inherent method agree
        assert!(format!("{layer:?}").contains("Encoder"));
    }
}

/// Every parameter of the spec, by name, with separate key/value sizes.
mod every_argument {
    use mha::ndarray::ArrayD;
    use mha::{attention_layer, ForwardOptions, MultiheadAttention};

    #[attention_layer(
        embed_dim = 12,
        num_heads = 3,
        dropout = 0.25,
        bias = false,
        add_bias_kv = true,
        add_zero_attn = true,
        kdim = 5,
        vdim = None,
        batch_first = true,
    )]
    struct Cross {}

    #[test]
    fn every_argument_by_name() {
        assert_eq!((Cross::HEAD_DIM, Cross::KDIM, Cross::VDIM), (4, 5, 12));
        assert_eq!(Cross::DROPOUT, 0.25);
        const { assert!(!Cross::PACKED_IN_PROJ) };
        assert_eq!(Cross::EXTRA_KEYS, 2);
        let names: Vec<&str> = Cross::PARAMETER_SHAPES.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "bias_k",
                "bias_v",
                "out_proj.weight"
            ]
        );

        let layer = Cross::random(3);
        let q = ArrayD::<f32>::ones(vec![2, 4, 12]); // (N, L, E)
        let k = ArrayD::<f32>::ones(vec![2, 6, 5]); // (N, S, kdim)
        let v = ArrayD::<f32>::ones(vec![2, 6, 12]); // (N, S, vdim)
        let out = layer
            .forward(q.view(), k.view(), v.view(), &ForwardOptions::default())
            .unwrap();
        assert_eq!(out.weights.unwrap().shape(), &[2, 4, 6 + Cross::EXTRA_KEYS]);

        let dynamic: MultiheadAttention = layer.into();
        assert_eq!(dynamic.config(), &Cross::CONFIG);
    }
}

/// The expansion names nothing from the user's scope: this module shadows Result, Option,
/// String, Path, Tensor, Weights, forward and `__private`, uses the facade under another name
/// (`crate = ::attention`), and expands one layer in a module without the prelude.
#[allow(dead_code)]
mod hygiene {
    type Result<T> = ::std::result::Result<T, ()>;
    struct Option;
    struct String;
    struct Path;
    struct Tensor;
    struct Weights;
    fn forward() {}
    mod __private {}

    #[attention::attention_layer(embed_dim = 8, num_heads = 2, crate = ::attention)]
    struct Renamed;

    #[no_implicit_prelude]
    mod bare {
        #[::mha::attention_layer(embed_dim = 8, num_heads = 2, kdim = 3)]
        pub struct Bare;
    }

    #[test]
    fn expansions_resolve_nothing_from_the_users_scope() {
        forward();
        let layer = Renamed::random(0);
        let x = ::mha::ndarray::ArrayD::<f32>::zeros(vec![3, 8]); // unbatched (L, E)
        let options = ::mha::ForwardOptions::default();
        let out = layer
            .forward(x.view(), x.view(), x.view(), &options)
            .unwrap();
        assert_eq!(out.output.shape(), &[3, 8]);
        let bare = bare::Bare::random(0);
        let k = ::mha::ndarray::ArrayD::<f32>::zeros(vec![4, 3]); // (S, kdim)
        let v = ::mha::ndarray::ArrayD::<f32>::zeros(vec![4, 8]); // (S, vdim)
        let out = bare
            .forward(x.view(), k.view(), v.view(), &options)
            .unwrap();
        assert_eq!(out.weights.unwrap().shape(), &[3, 4]);
        assert!(bare
            .forward(x.view(), x.view(), x.view(), &options)
            .is_err()); // key must be 3 wide
    }
}
