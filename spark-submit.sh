#!/usr/bin/env bash
# Submit one of this project's jobs to Spark: ./spark-submit.sh <job> [job arguments...]
# Run with --help for the whole story; README.md "Run on a cluster" shows it in use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="spark-submit.sh"

usage() {
	cat <<EOF
usage: ./$PROG <job> [job arguments...]
       ./$PROG --help

Submit jobs/<job>.py to Spark with this project's code and config:
  - the library as a wheel (dist/*.whl, rebuilt only when lib/ or setup.py changed) in --py-files,
    so executors import the same code as the driver;
  - every --config FILE and --model FILE among the job arguments in --files, so a driver on a
    cluster node finds them (the jobs look for a file by its base name in the working directory
    when the path given does not exist there);
  - Delta Lake: --jars with the jars 'make setup' fetched into .jars/, or --packages
    $(delta_coordinate) when DELTA_PACKAGES=1 or there are no fetched jars.

jobs: $(jobs_list)

environment:
  SPARK_MASTER       --master (spark://host:7077, yarn, k8s://..., local[*]); default: spark-submit's own
  DEPLOY_MODE        --deploy-mode: client (default) or cluster
  SPARK_SUBMIT_ARGS  more spark-submit options, split on spaces, e.g. "--conf spark.executor.memory=4g"
  DELTA_PACKAGES     1: take Delta with --packages (the cluster resolves it) instead of the local jars
  SPARK_HOME         the Spark installation to submit with; default: this project's pyspark (.venv)
  PYSPARK_PYTHON     Python on the executors (and the driver); default: .venv/bin/python when the master
                     is local or on this host, else the cluster's own python3
  PYSPARK_DRIVER_PYTHON  Python of a client-mode driver; default: .venv/bin/python when it exists

example:
  SPARK_MASTER=spark://127.0.0.1:7077 ./$PROG pipeline --config conf/base.yaml --config conf/cluster.yaml \\
      --set as_of=2026-01-01
EOF
}

die() {
	echo "$PROG: error: $*" >&2
	exit 2
}

jobs_list() {
	local names=()
	for f in "$ROOT"/jobs/*.py; do names+=("$(basename "$f" .py)"); done
	echo "${names[*]}"
}

delta_coordinate() {
	# _versions.py is import-free so that this needs no Python.
	local scala delta
	scala=$(sed -n 's/^SCALA_BINARY_VERSION = "\(.*\)"/\1/p' "$ROOT/lib/enrich/_versions.py")
	delta=$(sed -n 's/^DELTA_VERSION = "\(.*\)"/\1/p' "$ROOT/lib/enrich/_versions.py")
	echo "io.delta:delta-spark_${scala}:${delta}"
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in
-h | --help)
	usage
	exit 0
	;;
-*) die "the first argument is the job (one of: $(jobs_list)), got '$1'" ;;
esac

JOB="$1"
shift
SCRIPT="$ROOT/jobs/$JOB.py"
[[ -f "$SCRIPT" ]] || die "unknown job '$JOB'; one of: $(jobs_list)"

# Config and model files: each must exist here, and is shipped by its base name.
declare -a ARGS=() FILES=()
declare -A SHIPPED=()
ship() {
	local option="$1" file="$2"
	[[ -n "$file" ]] || die "$option needs a file"
	[[ -f "$file" ]] || die "$option $file: no such file"
	local name
	name=$(basename "$file")
	local full
	full="$(cd "$(dirname "$file")" && pwd)/$name"
	if [[ -n "${SHIPPED[$name]:-}" && "${SHIPPED[$name]}" != "$full" ]]; then
		die "$option $file: another file with the same name ($name) is shipped: ${SHIPPED[$name]}; rename one"
	fi
	[[ -n "${SHIPPED[$name]:-}" ]] || FILES+=("$full")
	SHIPPED[$name]="$full"
}
while [[ $# -gt 0 ]]; do
	case "$1" in
	--config | --model)
		[[ $# -ge 2 ]] || die "$1 needs a file"
		ship "$1" "$2"
		ARGS+=("$1" "$2")
		shift 2
		;;
	--config=* | --model=*)
		ship "${1%%=*}" "${1#*=}"
		ARGS+=("$1")
		shift
		;;
	*)
		ARGS+=("$1")
		shift
		;;
	esac
done

# The pipeline's default model files (pipeline.models, conf/models/*.yaml) are shipped when it names
# none, so its train stage finds them in cluster deploy mode too.
if [[ "$JOB" == pipeline && -z "$(printf '%s\n' "${ARGS[@]}" | grep -E '^--model(=|$)')" ]]; then
	for f in "$ROOT"/conf/models/*.yaml; do ship --model "$f"; done
fi

VENV_PY="$ROOT/.venv/bin/python"
if [[ -n "${SPARK_HOME:-}" ]]; then
	SUBMIT="$SPARK_HOME/bin/spark-submit"
elif [[ -x "$ROOT/.venv/bin/spark-submit" ]]; then
	SUBMIT="$ROOT/.venv/bin/spark-submit"
else
	SUBMIT=$(command -v spark-submit) || die "no spark-submit: run 'make setup' or set SPARK_HOME"
fi
[[ -x "$SUBMIT" ]] || die "$SUBMIT is not executable (SPARK_HOME=${SPARK_HOME:-})"

# The wheel, built again only when a source is newer than it. Built beside and moved into place, so
# two submissions at once never ship half a file.
VERSION=$(sed -n 's/^ *version="\(.*\)",/\1/p' "$ROOT/setup.py")
[[ -n "$VERSION" ]] || die "no version=\"...\" line in $ROOT/setup.py"
WHEEL="$ROOT/dist/profile_enrichment-$VERSION-py3-none-any.whl"
changed() {
	# A changed, added or removed source (a removal touches its folder); caches and build metadata aside.
	find "$ROOT/lib" "$ROOT/setup.py" -newer "$WHEEL" -not -path '*/__pycache__*' -not -path '*.egg-info*' \
		-not -name '*.pyc' -print -quit
}
mkdir -p "$ROOT/dist"
if command -v flock >/dev/null; then
	exec 9>"$ROOT/dist/.build.lock" # one build at a time: setuptools builds in the source folder
	flock 9
fi
if [[ ! -f "$WHEEL" || -n "$(changed)" ]]; then
	PIP_PY="${VENV_PY}"
	[[ -x "$PIP_PY" ]] || PIP_PY=$(command -v python3) || die "no Python to build the wheel with"
	BUILD=$(mktemp -d "$ROOT/dist.tmp.XXXXXX")
	trap 'rm -rf "$BUILD"' EXIT
	echo "$PROG: building $(basename "$WHEEL")" >&2
	"$PIP_PY" -m pip wheel --quiet --no-deps --wheel-dir "$BUILD" "$ROOT" >&2 || die "building the wheel failed"
	mv -f "$BUILD"/profile_enrichment-*.whl "$WHEEL"
	rm -rf "$BUILD" "$ROOT/build" # setuptools leaves its build tree in the source folder
	trap - EXIT
fi
exec 9>&-

declare -a SUBMIT_ARGS=(--name "profile-enrichment-$JOB" --py-files "$WHEEL")
[[ -z "${SPARK_MASTER:-}" ]] || SUBMIT_ARGS+=(--master "$SPARK_MASTER")
[[ -z "${DEPLOY_MODE:-}" ]] || SUBMIT_ARGS+=(--deploy-mode "$DEPLOY_MODE")
if [[ ${#FILES[@]} -gt 0 ]]; then
	SUBMIT_ARGS+=(--files "$(IFS=,; echo "${FILES[*]}")")
fi

shopt -s nullglob
JARS=("$ROOT"/.jars/*.jar)
shopt -u nullglob
if [[ "${DELTA_PACKAGES:-0}" == 1 || ${#JARS[@]} -eq 0 ]]; then
	SUBMIT_ARGS+=(--packages "$(delta_coordinate)")
else
	SUBMIT_ARGS+=(--jars "$(IFS=,; echo "${JARS[*]}")")
fi

# The same Python on the driver and, where they share this host, on the executors. Without
# SPARK_MASTER the master is spark-defaults.conf's, or local.
if [[ -x "$VENV_PY" ]]; then
	export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$VENV_PY}"
	DEFAULTS="${SPARK_CONF_DIR:-$(dirname "$(dirname "$SUBMIT")")/conf}/spark-defaults.conf"
	MASTER="${SPARK_MASTER:-$(sed -n 's/^spark\.master[[:space:]=]*//p' "$DEFAULTS" 2>/dev/null | tail -1)}"
	case "${MASTER:-local}" in
	local* | spark://127.0.0.1:* | spark://localhost:*) export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$VENV_PY}" ;;
	esac
fi

set -f # SPARK_SUBMIT_ARGS is split into words, never expanded as file patterns
# shellcheck disable=SC2206  # SPARK_SUBMIT_ARGS is a list of words on purpose
EXTRA=(${SPARK_SUBMIT_ARGS:-})
set +f
echo "$PROG: $SUBMIT ${SUBMIT_ARGS[*]} ${EXTRA[*]} $SCRIPT ${ARGS[*]}" >&2
exec "$SUBMIT" "${SUBMIT_ARGS[@]}" "${EXTRA[@]}" "$SCRIPT" "${ARGS[@]}"
