#!/usr/bin/env bash
# Tandem's OpenTelemetry Collector distribution, built by the Collector's builder
# (ocb) from collector/otelcol-builder.yaml, cached by the manifest's hash.
#
#   mk/collector.sh build    build it unless this manifest's binary is there
#   mk/collector.sh path     print where this manifest's binary is (built or not)
#
# The builder comes from the Go module proxy at the manifest's dist.version, the
# core release it belongs to. Everything lands under .tools/otelcol/.
set -euo pipefail
cd "$(dirname "$0")/.."

MANIFEST=collector/otelcol-builder.yaml
ROOT=.tools/otelcol
# The manifest's hash names the build: a changed manifest builds anew, an unchanged one
# does nothing.
HASH=$(sha256sum "$MANIFEST" | cut -c1-12)
NAME=$(sed -n 's/^  name: *//p' "$MANIFEST")
VERSION=$(sed -n 's/^  version: *"\(.*\)"/\1/p' "$MANIFEST")
BINARY=$ROOT/$HASH/$NAME

say() { echo "make collector: $*"; }

case "${1:-}" in
  path) echo "$PWD/$BINARY"; exit 0 ;;
  build) ;;
  *) echo "usage: $0 build|path" >&2; exit 2 ;;
esac

if [ -x "$BINARY" ]; then
  say "up to date: $BINARY (manifest $HASH)"
  exit 0
fi
[ -n "$NAME" ] && [ -n "$VERSION" ] || { say "$MANIFEST lacks dist.name or dist.version" >&2; exit 1; }

# The generated module needs Go 1.25 or later; older ones would fetch a toolchain.
# go.dev's installer puts Go in /usr/local/go (GO_INSTALL_DIR), which a non-login shell
# may not have on PATH.
GO_INSTALL_DIR=${GO_INSTALL_DIR-/usr/local/go}
if ! command -v go >/dev/null 2>&1 && [ -x "$GO_INSTALL_DIR/bin/go" ]; then
  PATH=$GO_INSTALL_DIR/bin:$PATH
fi
if ! command -v go >/dev/null 2>&1; then
  say "needs Go 1.25 or later on PATH (go is missing): install it from https://go.dev/dl, the module proxy gives the rest" >&2
  exit 1
fi
go_version=$(go env GOVERSION)
minor=$(echo "$go_version" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$minor" ] || [ "$minor" -lt 25 ]; then
  say "needs Go 1.25 or later; $(command -v go) is $go_version" >&2
  exit 1
fi

started=$SECONDS
builder_dir=$PWD/$ROOT/builder-v$VERSION
if [ ! -x "$builder_dir/builder" ]; then
  say "1/3 the builder, go.opentelemetry.io/collector/cmd/builder@v$VERSION, from the Go module proxy"
  GOBIN=$builder_dir go install "go.opentelemetry.io/collector/cmd/builder@v$VERSION"
else
  say "1/3 the builder v$VERSION is in $builder_dir"
fi

work=$ROOT/$HASH.partial
rm -rf "$work"
mkdir -p "$work"
cp "$MANIFEST" "$work/manifest.yaml"
say "2/3 $NAME $VERSION from $MANIFEST: modules, then compiling (cold, with an empty Go module cache: about 4 minutes on 2 cores; the lines below are the builder's)"
(cd "$work" && CGO_ENABLED=0 "$builder_dir/builder" --config manifest.yaml --ldflags="-s -w")

mkdir -p "$ROOT/$HASH"
mv "$work/build/$NAME" "$BINARY"
rm -rf "$work"
# Builds of other manifests go: one binary is 70 MiB.
for old in "$ROOT"/*/; do
  case "$(basename "$old")" in "$HASH" | builder-*) ;; *) rm -rf "$old" ;; esac
done
say "3/3 built $BINARY ($(du -m "$BINARY" | cut -f1) MiB) in $((SECONDS - started)) s"
