# Sourced by scripts/test and scripts/run: makes .venv with imgpipe installed
# (again when pyproject.toml changes) and the dev servers' programs, and says which
# CouchDB the tests and scripts/run use:
#   IMGPIPE_TEST_COUCHDB_URL=http://USER:PASSWORD@HOST:PORT   a CouchDB that runs already
#   IMGPIPE_COUCHDB_RELEASE=DIR    an Apache CouchDB release with its `start` script
#                                  (default: ../shared/couchdb beside the checkout, when there)
#   neither                        pouchdb-server, a stand-in for CouchDB's API (npm)
if [ -z "${IMGPIPE_TEST_COUCHDB_URL:-}" ] && [ -z "${IMGPIPE_COUCHDB_RELEASE:-}" ] \
        && [ -x ../shared/couchdb/start ]; then
    IMGPIPE_COUCHDB_RELEASE="$(cd ../shared/couchdb && pwd)"
    export IMGPIPE_COUCHDB_RELEASE
fi
if [ -n "${IMGPIPE_TEST_COUCHDB_URL:-}" ]; then
    echo "imgpipe: CouchDB is the one at IMGPIPE_TEST_COUCHDB_URL" >&2
elif [ -n "${IMGPIPE_COUCHDB_RELEASE:-}" ]; then
    echo "imgpipe: CouchDB is Apache CouchDB from $IMGPIPE_COUCHDB_RELEASE" >&2
else
    echo "imgpipe: no IMGPIPE_COUCHDB_RELEASE, no IMGPIPE_TEST_COUCHDB_URL, no ../shared/couchdb:" \
        "falling back to pouchdb-server, a stand-in for CouchDB's API (not Apache CouchDB)" >&2
fi

setup_imgpipe() {
    local extras="${1:-test}"
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv; then
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                rm -rf .venv
                DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
                python3 -m venv .venv
            else
                echo "imgpipe setup: python3 -m venv failed (install python3-venv)" >&2
                exit 1
            fi
        fi
    fi
    local want have=""
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)-${extras}"
    [ -f .venv/.imgpipe-installed ] && have="$(cat .venv/.imgpipe-installed)"
    if [ "$want" != "$have" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
        echo "$want" > .venv/.imgpipe-installed
    fi
    .venv/bin/python -m imgpipe.testing.servers install >/dev/null
}

with_setup_lock() {
    mkdir -p .cache
    (
        flock 9
        setup_imgpipe "$@"
    ) 9>.cache/setup.lock
}
