#!/usr/bin/env bash
# Runs the end-to-end scenarios on a real cluster made with kind:
#   1. creates the kind cluster (unless it exists);
#   2. builds the node, operator and e2e images and loads them, with busybox (the fault
#      injector's ephemeral containers), into the cluster;
#   3. installs the Helm chart;
#   4. runs partita-e2e as a Job inside the cluster (pod IPs are reachable from there) and
#      prints its log, one SCENARIO line per scenario; exits with the Job's outcome.
#
# Needs docker, kind, kubectl and helm. This cannot run on machines without a container engine
# (such as the ones that run the test suite); .github/workflows/e2e.yml runs it in CI.
#
#   e2e/kind.sh                      # every scenario
#   e2e/kind.sh --scenario failover  # some (repeatable)
#
# KIND_CLUSTER (default partita-e2e) names the cluster; KEEP_CLUSTER=1 keeps it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER:-partita-e2e}
tag=e2e
debug_image=busybox:1.36
job_timeout=${E2E_TIMEOUT:-1800}

log() { printf 'kind.sh: %s\n' "$*" >&2; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 2; }
done

if ! kind get clusters | grep -qx "$cluster"; then
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 180s
fi
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    log "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster"
  fi
}
trap cleanup EXIT
kubectl config use-context "kind-$cluster" >/dev/null

log "building images"
docker build -f node/Dockerfile -t "partita/partita-node:$tag" .
docker build -f operator/Dockerfile -t "partita/partita-operator:$tag" .
docker build -f e2e/Dockerfile -t "partita/partita-e2e:$tag" .
docker pull "$debug_image"
for image in "partita/partita-node:$tag" "partita/partita-operator:$tag" "partita/partita-e2e:$tag" "$debug_image"; do
  kind load docker-image --name "$cluster" "$image"
done

log "installing the chart"
helm upgrade --install partita charts/partita-operator \
  --namespace partita-system --create-namespace \
  --set image.tag="$tag" --set nodeImage.tag="$tag" \
  --wait --timeout 5m

log "running the scenarios"
kubectl delete namespace partita-e2e-runner --ignore-not-found --wait
kubectl create namespace partita-e2e-runner
args=""
for a in "$@"; do args="$args, \"$a\""; done
kubectl apply -f - <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: partita-e2e, namespace: partita-e2e-runner}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: partita-e2e}
rules:
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [get, create, delete]
  - apiGroups: [partita.dev]
    resources: [replicatedpartitionsets]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, delete]
  - apiGroups: [""]
    resources: [pods/ephemeralcontainers]
    verbs: [patch]
  - apiGroups: [apps]
    resources: [statefulsets]
    verbs: [get, list]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [create, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: partita-e2e}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: partita-e2e}
subjects: [{kind: ServiceAccount, name: partita-e2e, namespace: partita-e2e-runner}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: partita-e2e, namespace: partita-e2e-runner}
spec:
  backoffLimit: 0
  template:
    spec:
      serviceAccountName: partita-e2e
      restartPolicy: Never
      containers:
        - name: e2e
          image: partita/partita-e2e:$tag
          imagePullPolicy: Never
          args: ["--in-cluster"${args}]
          env:
            - {name: PARTITA_E2E_NODE_IMAGE, value: "partita/partita-node:$tag"}
            - {name: PARTITA_E2E_DEBUG_IMAGE, value: "$debug_image"}
            - {name: PARTITA_E2E_OPERATOR_NAMESPACE, value: partita-system}
YAML

# Wait until the Job has succeeded or failed, at most job_timeout seconds.
deadline=$((SECONDS + job_timeout))
while :; do
  done_count=$(kubectl -n partita-e2e-runner get job partita-e2e -o jsonpath='{.status.succeeded}{.status.failed}')
  [ -n "$done_count" ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "the scenarios did not finish in ${job_timeout}s"
    break
  fi
  sleep 5
done
kubectl -n partita-e2e-runner logs job/partita-e2e
[ "$(kubectl -n partita-e2e-runner get job partita-e2e -o jsonpath='{.status.succeeded}')" = 1 ]
