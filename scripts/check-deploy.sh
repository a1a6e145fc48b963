#!/usr/bin/env bash
# Static checks of the deployment files. No Docker engine or Kubernetes
# cluster runs them here, so each is checked against its schema instead:
# every compose file against the Compose Specification, every Kubernetes
# manifest against the API schemas of the oldest and newest Kubernetes we
# claim, and the HAProxy configuration with haproxy itself.
set -euo pipefail

LOG_TAG="${LOG_TAG:-check-deploy}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # haproxy

# The manifests must work from the oldest to the newest of these; the newest
# is the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS=(1.29.0 1.37.0)

usage() {
  cat <<'EOF'
Usage: scripts/check-deploy.sh

Validates, without Docker or Kubernetes:
  docker-compose.yml, deploy/compose*.yml   check-jsonschema --builtin-schema vendor.compose-spec
  deploy/k8s/*.yaml                         kubernetes-validate --strict, for each of 1.29.0 and 1.37.0
  the kustomization's output                the same (only where kubectl is installed)
  deploy/ha/haproxy.cfg                     haproxy -c (installed with apt-get when root)
The Python tools come from scripts/requirements-tools.txt, installed into
.venv-tools/ (created on first use, reused after).
EOF
}

check_compose() {
  local bin=$1 files=(docker-compose.yml deploy/compose*.yml)
  log "check-jsonschema --builtin-schema vendor.compose-spec ${files[*]}"
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "${files[@]}"
}

check_kubernetes() {
  local bin=$1 files=() file version
  for file in deploy/k8s/*.yaml; do
    # Kustomize's own file, not a Kubernetes resource.
    [[ $(basename "$file") == kustomization.yaml ]] || files+=("$file")
  done
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    log "kubernetes-validate --strict -k $version ${files[*]}"
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "${files[@]}"
    log "ok -- ${#files[@]} file(s) valid for Kubernetes $version"
  done
  # What `kubectl apply -k` would send: the same resources with the
  # namespace and the image the kustomization sets.
  if have kubectl; then
    local rendered
    rendered=$(mktemp --suffix=.yaml)
    log "kubectl kustomize deploy/k8s | kubernetes-validate --strict"
    kubectl kustomize deploy/k8s >"$rendered"
    "$bin/kubernetes-validate" --strict --quiet "$rendered" || {
      rm -f "$rendered"
      return 1
    }
    rm -f "$rendered"
    log "ok -- the kustomization's output is valid"
  else
    log "kubectl is not installed: not checking the kustomization's output"
  fi
}

check_haproxy() {
  if ! have haproxy && is_root && have apt-get; then
    log "haproxy is not installed: apt-get update && apt-get install -y haproxy (for haproxy -c only)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy
  fi
  if ! have haproxy; then
    log "haproxy is not installed (and this is not root with apt-get): not checking deploy/ha/haproxy.cfg"
    return 0
  fi
  log "haproxy -c -f deploy/ha/haproxy.cfg ($(haproxy -v | head -n 1))"
  haproxy -c -f deploy/ha/haproxy.cfg
}

main() {
  case ${1:-} in
    -h | --help)
      usage
      return 0
      ;;
  esac
  cd "$CATALOG_ROOT"
  local bin
  bin=$(tools_venv)
  check_compose "$bin"
  check_kubernetes "$bin"
  check_haproxy
}

main "$@"
