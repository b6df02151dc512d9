# Sourced by the benchmarks that run a real Kubernetes API server
# (bench/control-plane-vs-istiod.sh, bench/kube-pods.sh): how they start
# one and stop what they started. Needs $root (the repository).

stop() { # stops the processes named (SIGKILL after 10 s: istiod and the
  # API server drain for long on SIGTERM), and waits for them
  local pid
  for pid in "$@"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; done
  for pid in "$@"; do
    [[ -n "$pid" ]] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  return 0
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# kube_start DIR: a fresh etcd and kube-apiserver on loopback (as
# tests/support/kube.rs starts them), state and logs in DIR, with Istio's
# CRDs established. Sets etcd_pid, apiserver_pid, kube_server and kubectl.
kube_start() {
  local dir="$1" tools etcd_port peer_port
  tools="$("$root/scripts/kube-tools.sh")"
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj /CN=bench-kubernetes-ca -days 2 -out ca.crt
    openssl ecparam -name prime256v1 -genkey -noout -out apiserver.key
    openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile <(echo "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:127.0.0.1") \
      -out apiserver.crt
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key
    openssl ec -in sa.key -pubout -out sa.pub
  ) 2>/dev/null
  od -An -tx8 -N16 /dev/urandom | tr -d ' \n' >"$dir/token"
  echo "$(cat "$dir/token"),admin,admin,system:masters" >"$dir/tokens.csv"
  etcd_port="$(free_port)" peer_port="$(free_port)"
  kube_server="https://127.0.0.1:$(free_port)"
  "$tools/etcd" --name bench --data-dir "$dir/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  "$tools/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${kube_server##*:}" \
    --tls-cert-file "$dir/apiserver.crt" --tls-private-key-file "$dir/apiserver.key" \
    --client-ca-file "$dir/ca.crt" --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local,istio-ca \
    --service-cluster-ip-range 10.96.0.0/16 >"$dir/kube-apiserver.log" 2>&1 &
  apiserver_pid=$!
  cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {server: "$kube_server", certificate-authority: "$dir/ca.crt"}
users:
- name: admin
  user: {tokenFile: "$dir/token"}
contexts:
- name: bench
  context: {cluster: bench, user: admin}
current-context: bench
KUBECONFIG
  kubectl=("$tools/kubectl" --kubeconfig "$dir/kubeconfig")
  for _ in $(seq 1 300); do
    "${kubectl[@]}" get --raw /readyz >/dev/null 2>&1 && break
    kill -0 "$apiserver_pid" 2>/dev/null || {
      echo "kube-apiserver exited; log: $dir/kube-apiserver.log" >&2
      return 1
    }
    sleep 0.3
  done
  # Created, not applied: Istio's schemas are too large for kubectl's
  # last-applied annotation.
  "${kubectl[@]}" create -f "$tools/istio-crds.yaml" >/dev/null
  "${kubectl[@]}" wait --for=condition=Established crd --all --timeout=60s >/dev/null
}
