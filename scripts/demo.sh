#!/usr/bin/env bash
# Demo: build, start a local S3 server, make a bucket, mount it under ./demo/mnt,
# write a few files and list the bucket to show them going up.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fusermount3 >/dev/null 2>&1; then
  echo "installing fuse3 (needs root)..."
  apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
fi

cargo build --release --workspace --bins --examples --quiet
BIN=target/release/s3syncfs
SERVER=target/release/s3syncfs-testserver

DEMO=$PWD/demo
MNT=$DEMO/mnt
if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT"; fi
rm -rf "$DEMO/server" "$DEMO/cache"
mkdir -p "$MNT" "$DEMO/server" "$DEMO/cache"

export AWS_ACCESS_KEY_ID=demo-access-key
export AWS_SECRET_ACCESS_KEY=demo-secret-key
PORT=${DEMO_PORT:-9010}
"$SERVER" --addr 127.0.0.1:$PORT --data-dir "$DEMO/server" \
  --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
  --bucket demo-bucket > "$DEMO/server.log" 2>&1 &
SERVER_PID=$!
echo "$SERVER_PID" > "$DEMO/server.pid"
for _ in $(seq 50); do grep -q listening "$DEMO/server.log" && break; sleep 0.1; done
echo "S3 server (pid $SERVER_PID) on http://127.0.0.1:$PORT with bucket demo-bucket"

"$BIN" mount demo-bucket "$MNT" --endpoint "http://127.0.0.1:$PORT" --path-style \
  --cache-dir "$DEMO/cache"
echo "mounted at $MNT (daemon log: $DEMO/cache/s3syncfs.log)"

mkdir -p "$MNT/notes"
echo "hello from s3syncfs" > "$MNT/hello.txt"
date > "$MNT/notes/today.txt"
head -c 20000000 /dev/urandom > "$MNT/random-20MB.bin"
ln -s notes/today.txt "$MNT/today"
ls -l "$MNT" "$MNT/notes"

echo "waiting for the uploader..."
sleep 3
echo "objects in the bucket, listed straight from the S3 API:"
target/release/examples/bucket_ls "http://127.0.0.1:$PORT" demo-bucket

cat <<MSG

Done. The mount stays up. To finish:
  $BIN unmount $MNT          # uploads what is pending, then the daemon exits
  kill \$(cat $DEMO/server.pid)   # stop the local S3 server
MSG
