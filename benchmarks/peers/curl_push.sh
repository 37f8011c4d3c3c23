#!/usr/bin/env bash
# The registry's ceiling: push precompressed OCI layout blobs with curl, four at a time.
#
#   curl_push.sh push|head PLAN [PLAN ...]
#
# A PLAN (written by the harness, untimed) is one image: a first line "REPO_URL TAG MEDIA_TYPE
# MANIFEST_PATH", then one blob path per line (layout blobs are named by their sha256). "push"
# uploads every blob as POST .../blobs/uploads/ then PUT LOCATION?digest= with the file as the
# body (-T streams it), four blobs at once (xargs -P 4), then PUTs the manifest. "head" is the
# no-op run: HEAD every blob (four at once), then PUT the manifest. No check, no retry, no
# hashing: nothing a real client could do less.
set -euo pipefail

upload() {
    local repo_url=$1 path=$2 location separator
    location=$(curl -sSf -X POST -o /dev/null -D - "$repo_url/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $location in /*) location="${repo_url%%/v2/*}$location" ;; esac
    case $location in *\?*) separator='&' ;; *) separator='?' ;; esac
    curl -sSf -o /dev/null -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        -T "$path" "$location${separator}digest=sha256:${path##*/}"
}

head_blob() {
    curl -sSf -o /dev/null -I "$1/blobs/sha256:${2##*/}"
}

export -f upload head_blob
case ${1:-} in
    push) step=upload ;;
    head) step=head_blob ;;
    *) echo "usage: $0 push|head PLAN [PLAN ...]" >&2; exit 2 ;;
esac
shift
for plan in "$@"; do
    read -r repo_url tag media_type manifest <"$plan"
    tail -n +2 "$plan" | xargs -P 4 -n 1 bash -c "$step \"\$0\" \"\$1\"" "$repo_url"
    curl -sSf -o /dev/null -X PUT -H "Content-Type: $media_type" --data-binary "@$manifest" \
        "$repo_url/manifests/$tag"
done
