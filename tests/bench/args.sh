# The command line scale.sh, soak.sh and instructions.sh share, sourced before lib.sh (so that
# --help and a wrong argument start nothing): --no-build sets BUILD=0 (default 1), -h/--help
# prints the script's header comment; anything else stops the script.
BUILD=1
for arg in "$@"; do
  case $arg in
    --no-build) BUILD=0 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
