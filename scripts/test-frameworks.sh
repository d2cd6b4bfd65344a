#!/usr/bin/env bash
# Run the framework suite (tests/frameworks) on the real frameworks, each in its own venv.
#
#   scripts/test-frameworks.sh [NAME ...] [-- PYTEST_ARGS ...]     (no NAME = all frameworks)
#
# NAME is a framework key of the spec: pytorch (alias torch), keras, tensorflow, mlx, flax_nnx.
# For each framework:
#   1. the glue is generated fresh by mha-gen into target/framework-tests/glue/<NAME> (git-ignored);
#   2. its venv is made or reused by scripts/framework-env.sh (.venvs/<venv>);
#   3. pytest runs tests/frameworks in that venv with MHA_FRAMEWORK=<NAME> (and KERAS_BACKEND from the
#      spec's `backend` for Keras-based frameworks).
# The parity runner (crate mha-parity, binary `mha-parity`) is built once in release mode and
# given to the tests as MHA_PARITY_RUNNER. MHA_FIXTURES (default tests/fixtures/torch) picks the torch
# fixture set. The checkpoint conversion tests get mha-gen (MHA_GEN) and the torch venv's python
# (MHA_TORCH_PYTHON, which makes their TransformerEncoder checkpoint). At the end a matrix per framework
# is printed: fixture cases matched / refused as unsupported / failed, and the other tests; then the
# SDPA cases per framework (matched / wrong / crashed / refused, max |diff|) and the
# conversion's max |diff| vs torch per framework. Logs: target/framework-tests/<NAME>.log.
# Exit status: 0 only if every selected framework ran and nothing failed.
set -uo pipefail

ALL_KEYS=(pytorch keras tensorflow mlx flax_nnx)
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
WORK="$ROOT/target/framework-tests"
HOST_PYTHON="${PYTHON:-python3}"

say() { printf 'test-frameworks: %s\n' "$*"; }
die() { printf 'test-frameworks: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

venv_of() { case "$1" in pytorch) echo torch ;; *) echo "$1" ;; esac; }

KEYS=()
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *)
            key="$1"; [[ "$key" == torch ]] && key=pytorch
            ok=0
            for k in "${ALL_KEYS[@]}"; do [[ "$k" == "$key" ]] && ok=1; done
            [[ $ok == 1 ]] || die "unknown framework '$1' (expected one of: ${ALL_KEYS[*]}, or torch)"
            KEYS+=("$key") ;;
    esac
    shift
done
[[ ${#KEYS[@]} -gt 0 ]] || KEYS=("${ALL_KEYS[@]}")

command -v cargo >/dev/null || die "cargo not found"
command -v "$HOST_PYTHON" >/dev/null || die "'$HOST_PYTHON' not found (set PYTHON=...)"
FIXTURES="${MHA_FIXTURES:-$ROOT/tests/fixtures/torch}"
[[ -f "$FIXTURES/index.json" ]] || die "no torch fixture set at $FIXTURES (scripts/make_torch_fixtures.py makes it)"

mkdir -p "$WORK"
cd "$ROOT" || exit 2

say "building mha-gen and the parity runner (release) ..."
cargo build -q -p mha-gen || die "mha-gen does not build"
MHA_GEN_EXE="$ROOT/target/debug/mha-gen"
[[ -x "$MHA_GEN_EXE" ]] || die "no mha-gen binary at $MHA_GEN_EXE"
RUNNER=""
if runner_json="$(cargo build --release -p mha-parity --bin mha-parity --message-format=json-render-diagnostics)"; then
    RUNNER="$(printf '%s\n' "$runner_json" | "$HOST_PYTHON" -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "mha-parity" and msg.get("executable"):
        exe = msg["executable"]
print(exe)')"
fi
if [[ -z "$RUNNER" ]]; then
    say "WARNING: the parity runner (cargo build --release -p mha-parity) did not build;"
    say "         the native-layer runtime tests will fail"
fi

say "torch venv for the conversion tests' checkpoint: .venvs/torch"
"$SCRIPT_DIR/framework-env.sh" torch || say "WARNING: no torch venv: the checkpoint conversion tests will fail"

declare -A STATUS
for key in "${KEYS[@]}"; do
    venv="$(venv_of "$key")"
    glue="$WORK/glue/$key"
    log="$WORK/$key.log"
    matrix="$WORK/$key.matrix.json"
    sdpa_matrix="$WORK/$key.sdpa.json"
    convert_report="$WORK/$key.convert.json"
    rm -rf "$glue" "$matrix" "$sdpa_matrix" "$convert_report"
    say "== $key: generating the glue into ${glue#"$ROOT"/}"
    if ! cargo run -q -p mha-gen -- generate --out "$glue" --framework "$key" >"$log" 2>&1; then
        cat "$log" >&2
        STATUS[$key]="glue generation failed"
        continue
    fi
    module="$glue/python/mha_glue/multihead_attention/$key.py"
    say "== $key: venv .venvs/$venv"
    if ! "$SCRIPT_DIR/framework-env.sh" "$venv"; then
        STATUS[$key]="venv setup failed"
        continue
    fi
    envs=(MHA_FRAMEWORK="$key" MHA_GLUE_DIR="$glue/python" MHA_FIXTURES="$FIXTURES" MHA_MATRIX_OUT="$matrix"
          MHA_SDPA_MATRIX_OUT="$sdpa_matrix"
          JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3 PYTHONDONTWRITEBYTECODE=1
          MHA_GEN="$MHA_GEN_EXE" MHA_TORCH_PYTHON="$ROOT/.venvs/torch/bin/python" MHA_CONVERT_OUT="$convert_report")
    [[ -n "$RUNNER" ]] && envs+=(MHA_PARITY_RUNNER="$RUNNER")
    backend="$(sed -n 's/^BACKEND = "\(.*\)"$/\1/p' "$module")"
    [[ -n "$backend" ]] && envs+=(KERAS_BACKEND="$backend")
    say "== $key: pytest tests/frameworks${backend:+ (KERAS_BACKEND=$backend)}"
    env "${envs[@]}" "$ROOT/.venvs/$venv/bin/python" -m pytest "$ROOT/tests/frameworks" -q -rfE \
        -p no:cacheprovider "${PYTEST_ARGS[@]}" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    if [[ $rc == 0 ]]; then STATUS[$key]="ok"; else STATUS[$key]="pytest exit $rc"; fi
done

echo
say "matrix (fixture cases from ${FIXTURES#"$ROOT"/})"
failed=0
printf '%-11s %6s %8s %8s %7s   %-22s %s\n' framework cases matched refused failed "other tests pass/fail" status
for key in "${KEYS[@]}"; do
    matrix="$WORK/$key.matrix.json"
    status="${STATUS[$key]}"
    [[ "$status" == ok ]] || failed=1
    if [[ -f "$matrix" ]]; then
        "$HOST_PYTHON" - "$matrix" "$key" "$status" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
o = m["other_tests"]
other = f"{o['passed']}/{o['failed']}" + (f" ({o['skipped']} skipped)" if o["skipped"] else "")
print(f"{sys.argv[2]:<11} {m['cases']:>6} {m['matched']:>8} {m['refused']:>8} {m['failed']:>7}   {other:<22} {sys.argv[3]}")
for name, outcome in m["case_outcomes"].items():
    if outcome != "matched":
        why = f" (feature {m['refused_features'][name]})" if name in m.get("refused_features", {}) else ""
        print(f"{'':<11} {outcome:>8}: {name}{why}")
EOF
    else
        printf '%-11s %6s %8s %8s %7s   %-22s %s\n' "$key" - - - - - "$status"
    fi
done

echo
say "ScaledDotProductAttention: torch SDPA cases (tests/fixtures/sdpa, sdpa_corners, shared samples) per framework"
printf '%-11s %6s %8s %6s %8s %8s   %s\n' framework cases matched wrong crashed refused "max |diff|"
for key in "${KEYS[@]}"; do
    report="$WORK/$key.sdpa.json"
    if [[ ! -f "$report" ]]; then
        printf '%-11s no result\n' "$key"
        continue
    fi
    "$HOST_PYTHON" - "$report" "$key" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
diff = "-" if m["max_abs_diff"] is None else f"{m['max_abs_diff']:.3g}"
print(f"{sys.argv[2]:<11} {m['cases']:>6} {m['matched']:>8} {m['wrong']:>6} {m['crashed']:>8} {m['refused']:>8}   {diff}")
for name, o in m["case_outcomes"].items():
    if o["outcome"] != "matched":
        print(f"{'':<11} {o['outcome']:>8}: {name}")
EOF
done

echo
say "checkpoint conversion (torch TransformerEncoder, 3 layers): max |diff| vs torch per framework"
for key in "${KEYS[@]}"; do
    report="$WORK/$key.convert.json"
    if [[ ! -f "$report" ]]; then
        printf '%-11s no result\n' "$key"
        continue
    fi
    "$HOST_PYTHON" - "$report" "$key" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
diffs = r.get("max_abs_diff", {})
out = max((d["attn_output"] for d in diffs.values()), default=float("nan"))
weights = max((d["attn_weights"] for d in diffs.values()), default=float("nan"))
exact = "bit for bit" if r.get("round_trip_bit_exact") else "failed or not run"
print(f"{sys.argv[2]:<11} layers {len(diffs)}  attn_output {out:.3g}  attn_weights {weights:.3g}  back: {exact}")
EOF
done
exit $failed
