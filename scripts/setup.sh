# Sourced by scripts/test and scripts/run: makes .venv with imgpipe installed
# (again when pyproject.toml changes) and the dev servers' programs.
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
