#!/usr/bin/env bash
# Installs kubectl (which renders Kustomize: `kubectl kustomize`) from the Kubernetes project's
# signed apt repository on Debian or Ubuntu, unless it is already on PATH. tests/deploy/test_manifests.py
# needs it; cloudbuild.yaml's test step runs this first. KUBECTL_MINOR picks the release line.
set -euo pipefail
minor=${KUBECTL_MINOR:-v1.33}
if command -v kubectl >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
repository="https://pkgs.k8s.io/core:/stable:/${minor}/deb/"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ca-certificates curl gnupg >/dev/null
$sudo install -d -m 0755 /etc/apt/keyrings
curl -fsSL "${repository}Release.key" | $sudo gpg --dearmor --yes -o "$keyring"
echo "deb [signed-by=$keyring] $repository /" | $sudo tee /etc/apt/sources.list.d/kubernetes.list >/dev/null
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq kubectl >/dev/null
kubectl version --client
