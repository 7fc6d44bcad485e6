#!/usr/bin/env bash
# Set up a fresh Debian machine for attestlab: Debian packages the tests and demo use,
# then a virtual environment (.venv) with attestlab installed in it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v lspci  >/dev/null 2>&1 || need+=(pciutils)   # differential tests of the config-space decoder
command -v tshark >/dev/null 2>&1 || need+=(tshark)     # pcapng evidence must read in tshark; egress benchmark
command -v sz     >/dev/null 2>&1 || need+=(lrzsz)      # the simulated BMC shell's `sz` (ZMODEM/YMODEM transfers)
command -v xxd    >/dev/null 2>&1 || need+=(xxd)        # the hex-dump renderers are checked against the real tools
command -v hexdump >/dev/null 2>&1 || need+=(bsdextrautils)
command -v busybox >/dev/null 2>&1 || need+=(busybox)   # BusyBox's hexdump -C and xxd, as on a BMC
command -v ser2net >/dev/null 2>&1 || [ -x /usr/sbin/ser2net ] || need+=(ser2net)  # console server for the serial transport tests
command -v ip     >/dev/null 2>&1 || need+=(iproute2)   # network namespaces and veth pairs
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # throwaway clusters: the shared-archive tests
{ ls /usr/lib/*/libusb-1.0.so.0 || ls /lib/*/libusb-1.0.so.0; } >/dev/null 2>&1 || need+=(libusb-1.0-0)  # pyusb's backend on a bench
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: warning: missing Debian packages ${need[*]}; run as root (or apt-get install them)." >&2
    echo "setup: tests that need them skip, saying why." >&2
  fi
fi

# git keeps no file mode but the executable bit; attestlab refuses a private key others can read.
chmod 600 fixtures/keys/test-lab.key fixtures/keys/test-reference-signer.key

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.attestlab-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing attestlab and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
