#!/usr/bin/env bash
# Create (or reuse) a Cloud TPU VM, put bigml_jax on every worker, install it
# with JAX's TPU build and launch one experiment on all workers at once.
# Run with --help for usage.
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REMOTE_DIR=bigml_jax   # relative to the remote user's home directory

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [options]

Creates or reuses a Cloud TPU VM, copies this repository to every worker,
installs it with 'pip install -e .[tpu]' (which pulls in jax[tpu]) and runs
  python3 -m experiments.run --config=CONFIG --workdir=WORKDIR [--config.K=V ...]
on all workers at once. On TPU VMs jax.distributed.initialize() detects the
other hosts by itself, so every worker runs the very same command.

Required:
  --name NAME              TPU VM name
  --zone ZONE              zone, e.g. us-central2-b (v4) or us-west4-a (v5e)

VM options:
  --accelerator-type TYPE  default: v4-8 (single host); e.g. v4-32 is 4 hosts
  --version VERSION        TPU runtime version, default: tpu-ubuntu2204-base
  --project PROJECT        GCP project (default: gcloud's configured project)
  --spot                   create a Spot (preemptible) VM; cheaper, can vanish
  --skip-create            assume the VM exists; do not describe/create it
  --delete                 delete the VM and exit (nothing else is done)

Code options:
  --repo URL               git clone URL on each worker (or pull if already
                           cloned) instead of uploading this checkout.
                           Without it, 'git archive HEAD' of this checkout is
                           copied, so uncommitted changes are NOT included.
  --skip-install           skip 'pip install'; the install is editable, so new
                           code still takes effect after a fresh copy

Experiment options:
  --config PATH            default: experiments/configs/default.py
  --workdir DIR            checkpoints/logs, an absolute path. Multi-host
                           pods need one directory every host sees (checked
                           before the launch): an NFS/Filestore share, or a
                           bucket mounted on every worker with gcsfuse
                           --implicit-dirs --rename-dir-limit=200000 (on it,
                           a commit file marks each finished checkpoint);
                           gs:// URLs are not supported yet. Default:
                           \$HOME/bigml_runs/NAME on each worker (fine for a
                           single host only).
  --override KEY=VALUE     passed as --config.KEY=VALUE; may be repeated

Other:
  --dry-run                print every command (gcloud, git) instead of
                           running it; gcloud need not be installed
  -h, --help               show this help

The experiment runs in the foreground over ssh: its output streams here and
Ctrl-C (or a dropped connection) stops it.

Examples:
  # Single host v4-8, default config:
  $PROG --name my-tpu --zone us-central2-b

  # 4-host v4-32 Spot pod, a bucket mounted at /mnt/my-bucket on every
  # worker as the shared workdir, two overrides:
  $PROG --name pod --zone us-central2-b --accelerator-type v4-32 --spot \\
    --config experiments/configs/default.py --workdir /mnt/my-bucket/runs/exp1 \\
    --override batch_size=1024 --override optimizer.learning_rate=3e-4

  # Re-run on an existing VM with freshly committed code, no reinstall:
  $PROG --name my-tpu --zone us-central2-b --skip-create --skip-install

  # See what would happen, then clean up:
  $PROG --dry-run --name my-tpu --zone us-central2-b
  $PROG --name my-tpu --zone us-central2-b --delete
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
warn() { echo "$PROG: warning: $*" >&2; }
# Under --dry-run progress goes to stdout as comments, so the output reads as
# a script; otherwise to stderr, away from the experiment's own output.
log() {
  if [[ $DRY_RUN == 1 ]]; then echo "# $*"; else echo "==> $*" >&2; fi
}

# Quote one word for a POSIX shell, leaving plain words bare so that dry-run
# output and the remote command stay readable.
shquote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Run a command, or only print it under --dry-run.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    local out="" arg
    for arg in "$@"; do out+="$(shquote "$arg") "; done
    echo "${out% }"
  else
    "$@"
  fi
}

NAME="" ZONE="" PROJECT="" REPO_URL="" WORKDIR=""
ACCEL=v4-8
VERSION=tpu-ubuntu2204-base
CONFIG=experiments/configs/default.py
SPOT=0 SKIP_CREATE=0 SKIP_INSTALL=0 DELETE=0 DRY_RUN=0
OVERRIDES=()

# Fetch the value of option $opt into $val, from "--opt=value" or from the
# next argument (then the loop must shift one extra).
takes_value() {
  if [[ $has_inline == 1 ]]; then return 0; fi
  [[ $# -ge 2 ]] || die "option $opt needs a value"
  val=$2
  shift_extra=1
}

while [[ $# -gt 0 ]]; do
  opt=$1 val="" has_inline=0 shift_extra=0
  # Accept both "--opt value" and "--opt=value".
  if [[ $opt == --*=* ]]; then val=${opt#*=} opt=${opt%%=*} has_inline=1; fi
  shift_extra=0
  case $opt in
    -h|--help) usage; exit 0 ;;
    --name) takes_value "$@"; NAME=$val ;;
    --zone) takes_value "$@"; ZONE=$val ;;
    --accelerator-type) takes_value "$@"; ACCEL=$val ;;
    --version) takes_value "$@"; VERSION=$val ;;
    --project) takes_value "$@"; PROJECT=$val ;;
    --config) takes_value "$@"; CONFIG=$val ;;
    --workdir) takes_value "$@"; WORKDIR=$val ;;
    --repo) takes_value "$@"; REPO_URL=$val ;;
    --override)
      takes_value "$@"
      [[ $val == ?*=* ]] || die "--override expects KEY=VALUE, got '$val'"
      OVERRIDES+=("--config.$val") ;;
    --spot|--skip-create|--skip-install|--delete|--dry-run)
      [[ $has_inline == 0 ]] || die "option $opt takes no value"
      case $opt in
        --spot) SPOT=1 ;; --skip-create) SKIP_CREATE=1 ;;
        --skip-install) SKIP_INSTALL=1 ;; --delete) DELETE=1 ;;
        --dry-run) DRY_RUN=1 ;;
      esac ;;
    *) die "unknown option '$1' (see $PROG --help)" ;;
  esac
  shift $((1 + shift_extra))
done

[[ -n $NAME ]] || die "--name is required (see $PROG --help)"
[[ -n $ZONE ]] || die "--zone is required (see $PROG --help)"
if [[ $WORKDIR == *://* ]]; then
  die "--workdir $WORKDIR: URL workdirs are not supported yet; pass a directory every worker sees: an NFS share, or the bucket mounted on every worker (gcsfuse --implicit-dirs --rename-dir-limit=200000 BUCKET /mnt/BUCKET) and --workdir /mnt/BUCKET/..."
fi
# The code directory is replaced at every upload (rm -rf): a relative
# workdir would live, and be deleted, inside it.
if [[ -n $WORKDIR && $WORKDIR != /* ]]; then
  die "--workdir $WORKDIR is relative: it would live inside the code directory, which every upload deletes; pass an absolute path, e.g. /mnt/BUCKET/runs/NAME"
fi
if [[ $DRY_RUN == 0 ]] && ! command -v gcloud >/dev/null 2>&1; then
  die "gcloud not found; install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login'"
fi

GFLAGS=(--zone "$ZONE")
if [[ -n $PROJECT ]]; then GFLAGS+=(--project "$PROJECT"); fi
TPU=(gcloud compute tpus tpu-vm)

# Every remote step goes to all workers in parallel; a pod is only usable if
# all hosts have identical code and packages.
on_all_workers() {
  log "on all workers: $1"
  run "${TPU[@]}" ssh "$NAME" "${GFLAGS[@]}" --worker=all --command "$1"
}

if [[ $DELETE == 1 ]]; then
  log "deleting TPU VM $NAME"
  run "${TPU[@]}" delete "$NAME" "${GFLAGS[@]}" --quiet
  exit 0
fi

# --- 1. VM -------------------------------------------------------------------
if [[ $SKIP_CREATE == 0 ]]; then
  CREATE=("${TPU[@]}" create "$NAME" "${GFLAGS[@]}"
          --accelerator-type "$ACCEL" --version "$VERSION")
  if [[ $SPOT == 1 ]]; then CREATE+=(--spot); fi
  if [[ $DRY_RUN == 1 ]]; then
    # The describe result decides whether create runs; show both.
    run "${TPU[@]}" describe "$NAME" "${GFLAGS[@]}" --format='value(state)'
    log "only if the VM does not exist yet:"
    run "${CREATE[@]}"
  elif state=$("${TPU[@]}" describe "$NAME" "${GFLAGS[@]}" \
                 --format='value(state)' 2>/dev/null); then
    # A preempted Spot VM cannot be restarted, only deleted and recreated.
    [[ $state == READY ]] || die "TPU VM $NAME exists but is $state; delete it with --delete and re-run"
    log "reusing TPU VM $NAME (READY); --accelerator-type/--version/--spot are ignored"
  else
    log "creating TPU VM $NAME ($ACCEL, $VERSION)"
    "${CREATE[@]}"
  fi
fi

# --- 2. Code -----------------------------------------------------------------
if [[ -n $REPO_URL ]]; then
  url=$(shquote "$REPO_URL")
  on_all_workers "if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR pull --ff-only; else git clone $url $REMOTE_DIR; fi"
else
  if [[ $DRY_RUN == 0 ]] && ! git -C "$REPO_ROOT" diff --quiet HEAD 2>/dev/null; then
    warn "uncommitted changes are not uploaded (git archive HEAD); commit them or use --repo"
  fi
  if [[ $DRY_RUN == 1 ]]; then
    TARBALL="${TMPDIR:-/tmp}/bigml_jax.XXXXXX.tar.gz"
  else
    TARBALL=$(mktemp "${TMPDIR:-/tmp}/bigml_jax.XXXXXX.tar.gz")
    trap 'rm -f "$TARBALL"' EXIT
  fi
  log "packing HEAD of $REPO_ROOT"
  run git -C "$REPO_ROOT" archive --format=tar.gz --prefix="$REMOTE_DIR/" -o "$TARBALL" HEAD
  log "copying code to all workers"
  run "${TPU[@]}" scp "$TARBALL" "$NAME:$REMOTE_DIR.tar.gz" "${GFLAGS[@]}" --worker=all
  # Replace rather than overlay, so files deleted locally vanish remotely too.
  on_all_workers "rm -rf $REMOTE_DIR && tar -xzf $REMOTE_DIR.tar.gz && rm -f $REMOTE_DIR.tar.gz"
fi

# --- 3. Install --------------------------------------------------------------
if [[ $SKIP_INSTALL == 0 ]]; then
  on_all_workers "cd $REMOTE_DIR && python3 -m pip install -e \".[tpu]\""
fi

# --- 4. Launch ---------------------------------------------------------------
if [[ -z $WORKDIR ]]; then
  # Left unquoted on purpose so that $HOME expands on each worker.
  workdir_arg="--workdir=\"\$HOME/bigml_runs/$NAME\""
else
  workdir_arg=$(shquote "--workdir=$WORKDIR")
fi
# Every host must see the same workdir (checkpoints are collective, the
# lock and logs are written by worker 0): worker 0 leaves a marker there and
# every worker must find it. The default, under each worker's own $HOME,
# passes only on a single host.
marker=".bigml_shared_check_$$_$RANDOM"
if [[ -z $WORKDIR ]]; then
  check_dir="\$HOME/bigml_runs/$NAME"
else
  check_dir=$(shquote "$WORKDIR")
fi
log "checking that every worker sees the workdir"
run "${TPU[@]}" ssh "$NAME" "${GFLAGS[@]}" --worker=0 --command \
  "mkdir -p $check_dir && touch $check_dir/$marker"
if ! on_all_workers "test -e $check_dir/$marker || { echo \"worker \$(hostname) does not see $check_dir\" >&2; exit 1; }"; then
  die "--workdir ${WORKDIR:-\$HOME/bigml_runs/$NAME} is not shared by every worker; pass a directory every worker mounts: an NFS/Filestore share, or a bucket under gcsfuse (gcsfuse --implicit-dirs --rename-dir-limit=200000 BUCKET /mnt/BUCKET)"
fi
run "${TPU[@]}" ssh "$NAME" "${GFLAGS[@]}" --worker=0 --command \
  "rm -f $check_dir/$marker"
cmd="cd $REMOTE_DIR && python3 -m experiments.run $(shquote "--config=$CONFIG") $workdir_arg"
for o in "${OVERRIDES[@]}"; do cmd+=" $(shquote "$o")"; done
on_all_workers "$cmd"
