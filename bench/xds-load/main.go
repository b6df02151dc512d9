// Command xds-load simulates many Envoy sidecars against istiod on Envoy's
// aggregated discovery service (state of the world, as Envoy's ADS), for the
// control-plane benchmark (bench/control-plane-vs-istiod.sh): the same
// figures bench-control-plane measures for trellisd, measured for istiod.
//
// Each simulated proxy has its own connection and stream, subscribes as
// Envoy does (clusters, then the endpoints of its EDS clusters, listeners,
// then the routes its listeners name) and ACKs every response with its
// version and nonce. It reads only what it needs to know what to ask for
// next (cluster names and types, route names); the rest of each resource is
// counted, not decoded, so that the cores measure the control plane.
//
// Changes are made the way istiod sees them on a cluster: each change (a
// directory of YAML files, changes/endpoints/0/svc7.yaml) is applied to the
// API server istiod watches, one server-side apply request per object, the
// same requests bench-control-plane makes of trellisd's API.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"
)

const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeHCM      = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

var allTypes = []string{typeCluster, typeEndpoint, typeListener, typeRoute}

// maxStreams bounds how often one proxy opens its stream again.
const maxStreams = 100

// streamErrors counts failed streams, so that the first few are reported.
var streamErrors atomic.Int64

type args struct {
	addr       string
	proxies    int
	namespaces int
	pid        int
	kubeServer string
	kubeCA     string
	kubeToken  string
	changes    string
	sidecars   bool
	monitoring string
	jsonOut    string
}

// received is what one simulated proxy got: per type, how many responses
// and when the first and the last arrived.
type received struct {
	mu         sync.Mutex
	count      map[string]int
	first      map[string]time.Time
	last       map[string]time.Time
	bytes      int
	reconnects int
}

func (r *received) got(typeURL string, size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count[typeURL]++
	now := time.Now()
	if r.count[typeURL] == 1 {
		r.first[typeURL] = now
	}
	r.last[typeURL] = now
	r.bytes += size
}

func (r *received) configured() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range allTypes {
		if r.count[t] == 0 {
			return false
		}
	}
	return true
}

func main() {
	var a args
	flag.StringVar(&a.addr, "addr", "127.0.0.1:15010", "istiod's plaintext xDS address")
	flag.IntVar(&a.proxies, "proxies", 100, "simulated sidecars")
	flag.IntVar(&a.namespaces, "namespaces", 10, "namespaces the sidecars are spread over")
	flag.IntVar(&a.pid, "pid", 0, "istiod's process id (RSS and CPU are read from /proc)")
	flag.StringVar(&a.kubeServer, "kube-server", "", "the API server istiod watches (changes are applied to it), https://host:port")
	flag.StringVar(&a.kubeCA, "kube-ca", "", "the API server's CA certificate (PEM)")
	flag.StringVar(&a.kubeToken, "kube-token", "", "a file holding a bearer token the API server admits")
	flag.StringVar(&a.changes, "changes", "", "the changes directory (endpoints/N/*, vs/N/*)")
	flag.BoolVar(&a.sidecars, "sidecars", false, "a Sidecar scopes each namespace to itself: a change is timed to the proxies of its object's namespace only")
	flag.StringVar(&a.monitoring, "monitoring", "", "istiod's monitoring address (pilot_proxy_convergence_time)")
	flag.StringVar(&a.jsonOut, "json", "", "write the results as JSON here")
	flag.Parse()
	if err := run(a); err != nil {
		fmt.Fprintln(os.Stderr, "xds-load:", err)
		os.Exit(1)
	}
}

func run(a args) error {
	kube, err := newKubeClient(a)
	if err != nil {
		return err
	}
	proxies := make([]*received, a.proxies)
	start := time.Now()
	cpuStart := cpuSeconds(a.pid)
	for i := range proxies {
		proxies[i] = &received{count: map[string]int{}, first: map[string]time.Time{}, last: map[string]time.Time{}}
		go simulatedProxy(a, i, proxies[i])
	}
	if err := waitConfigured(proxies, start); err != nil {
		return err
	}
	var fullPush time.Duration
	for _, p := range proxies {
		p.mu.Lock()
		for _, t := range allTypes {
			if d := p.first[t].Sub(start); d > fullPush {
				fullPush = d
			}
		}
		p.mu.Unlock()
	}
	rssConnected := procKiB(a.pid, "VmRSS:")
	cpuFullPush := cpuSeconds(a.pid) - cpuStart
	bytesFullPush := float64(totalBytes(proxies)) / float64(max(a.proxies, 1))
	// Let the connect storm's debounced pushes settle before timing changes.
	time.Sleep(2 * time.Second)
	convergenceBefore := convergence(a.monitoring)

	before := totalBytes(proxies)
	endpointChanges, err := changeDirs(filepath.Join(a.changes, "endpoints"))
	if err != nil {
		return err
	}
	var latencies []float64
	for _, dir := range endpointChanges {
		l, err := timedChange(kube, dir, scoped(a, proxies, dir), typeEndpoint)
		if err != nil {
			return err
		}
		latencies = append(latencies, l...)
		time.Sleep(500 * time.Millisecond)
	}
	// Per proxy reached (all of them without Sidecars).
	bytesPerChange := float64(totalBytes(proxies)-before) / float64(max(len(latencies), 1))
	vsChanges, err := changeDirs(filepath.Join(a.changes, "vs"))
	if err != nil {
		return err
	}
	var vsLatencies []float64
	for _, dir := range vsChanges {
		l, err := timedChange(kube, dir, scoped(a, proxies, dir), typeRoute)
		if err != nil {
			return err
		}
		vsLatencies = append(vsLatencies, l...)
		time.Sleep(500 * time.Millisecond)
	}
	sort.Float64s(latencies)
	sort.Float64s(vsLatencies)
	reconnects := 0
	for _, p := range proxies {
		p.mu.Lock()
		reconnects += p.reconnects
		p.mu.Unlock()
	}
	results := map[string]any{
		"proxies":                             a.proxies,
		"full_push_ms":                        fullPush.Milliseconds(),
		"endpoint_change_p50_ms":              percentile(latencies, 0.5),
		"endpoint_change_p99_ms":              percentile(latencies, 0.99),
		"vs_change_p50_ms":                    percentile(vsLatencies, 0.5),
		"vs_change_p99_ms":                    percentile(vsLatencies, 0.99),
		"rss_connected_mib":                   float64(rssConnected) / 1024,
		"rss_peak_mib":                        float64(procKiB(a.pid, "VmHWM:")) / 1024,
		"cpu_seconds_full_push":               cpuFullPush,
		"cpu_seconds":                         cpuSeconds(a.pid) - cpuStart,
		"bytes_per_proxy_full_push":           bytesFullPush,
		"bytes_per_proxy_per_endpoint_change": bytesPerChange,
		"streams_reopened":                    reconnects,
	}
	if a.monitoring != "" {
		// istiod's own figure for the timed changes only: the histogram's
		// growth since before them (seconds, cumulative buckets).
		after := convergence(a.monitoring)
		changes := map[string]float64{}
		for k, v := range after {
			changes[k] = v - convergenceBefore[k]
		}
		results["pilot_proxy_convergence_time_changes"] = changes
	}
	out, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	if a.jsonOut != "" {
		return os.WriteFile(a.jsonOut, out, 0o644)
	}
	return nil
}

func waitConfigured(proxies []*received, start time.Time) error {
	progress := time.Now()
	for {
		n := 0
		for _, p := range proxies {
			if p.configured() {
				n++
			}
		}
		if n == len(proxies) {
			return nil
		}
		if time.Since(progress) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "%.0f s: %d of %d proxies configured\n", time.Since(start).Seconds(), n, len(proxies))
			progress = time.Now()
		}
		if time.Since(start) > 600*time.Second {
			return fmt.Errorf("%d of %d proxies got their config within 600 s", n, len(proxies))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// changeDirs lists dir's numbered change directories in order.
func changeDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(dirs[i])
		b, _ := strconv.Atoi(dirs[j])
		return a < b
	})
	for i := range dirs {
		dirs[i] = filepath.Join(dir, dirs[i])
	}
	return dirs, nil
}

// kubeClient applies objects to the API server istiod watches.
type kubeClient struct {
	server string
	token  string
	http   *http.Client
}

func newKubeClient(a args) (*kubeClient, error) {
	if a.kubeServer == "" {
		return nil, errors.New("-kube-server is required")
	}
	ca, err := os.ReadFile(a.kubeCA)
	if err != nil {
		return nil, fmt.Errorf("-kube-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("-kube-ca %s: no PEM certificate", a.kubeCA)
	}
	token, err := os.ReadFile(a.kubeToken)
	if err != nil {
		return nil, fmt.Errorf("-kube-token: %w", err)
	}
	return &kubeClient{
		server: strings.TrimSuffix(a.kubeServer, "/"),
		token:  strings.TrimSpace(string(token)),
		http:   &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
	}, nil
}

// apply server-side applies every object of a YAML stream, one request each
// (an object that did not change makes no event).
func (k *kubeClient) apply(stream []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(stream))
	for {
		var obj struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			} `yaml:"metadata"`
		}
		var doc yaml.Node
		err := dec.Decode(&doc)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := doc.Decode(&obj); err != nil {
			return err
		}
		if obj.Kind == "" {
			continue
		}
		body, err := yaml.Marshal(&doc)
		if err != nil {
			return err
		}
		url := fmt.Sprintf("%s/apis/%s/namespaces/%s/%s/%s?fieldManager=bench&force=true",
			k.server, obj.APIVersion, obj.Metadata.Namespace, plural(obj.Kind), obj.Metadata.Name)
		req, err := http.NewRequest(http.MethodPatch, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/apply-patch+yaml")
		req.Header.Set("Authorization", "Bearer "+k.token)
		resp, err := k.http.Do(req)
		if err != nil {
			return err
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("applying %s %s/%s: %s: %s", obj.Kind, obj.Metadata.Namespace, obj.Metadata.Name, resp.Status, text)
		}
	}
}

// plural is the resource name of an Istio kind (ServiceEntry: serviceentries).
func plural(kind string) string {
	k := strings.ToLower(kind)
	if strings.HasSuffix(k, "y") {
		return strings.TrimSuffix(k, "y") + "ies"
	}
	return k + "s"
}

// timedChange applies the files of change directory dir to the API server
// and waits until every proxy has a new response of typeURL; the
// milliseconds each took.
func timedChange(kube *kubeClient, dir string, proxies []*received, typeURL string) ([]float64, error) {
	before := make([]int, len(proxies))
	for i, p := range proxies {
		p.mu.Lock()
		before[i] = p.count[typeURL]
		p.mu.Unlock()
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var stream []byte
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			return nil, err
		}
		stream = append(append(stream, data...), "\n---\n"...)
	}
	t0 := time.Now()
	if err := kube.apply(stream); err != nil {
		return nil, err
	}
	for {
		done := 0
		for i, p := range proxies {
			p.mu.Lock()
			if p.count[typeURL] > before[i] {
				done++
			}
			p.mu.Unlock()
		}
		if done == len(proxies) {
			break
		}
		if time.Since(t0) > 120*time.Second {
			return nil, fmt.Errorf("change %s reached %d of %d proxies within 120 s", dir, done, len(proxies))
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := make([]float64, len(proxies))
	for i, p := range proxies {
		p.mu.Lock()
		out[i] = float64(p.last[typeURL].Sub(t0).Microseconds()) / 1000
		p.mu.Unlock()
	}
	return out, nil
}

// scoped is the proxies a change in dir reaches: with Sidecars, those in
// the namespace of its objects (proxy i is in namespace i % namespaces).
func scoped(a args, proxies []*received, dir string) []*received {
	if !a.sidecars {
		return proxies
	}
	files, err := os.ReadDir(dir)
	if err != nil || len(files) == 0 {
		return proxies
	}
	data, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
	if err != nil {
		return proxies
	}
	m := regexp.MustCompile(`namespace: ns(\d+)`).FindSubmatch(data)
	if m == nil {
		return proxies
	}
	ns, _ := strconv.Atoi(string(m[1]))
	var out []*received
	for i, p := range proxies {
		if i%a.namespaces == ns {
			out = append(out, p)
		}
	}
	return out
}

// simulatedProxy runs proxy i's stream, opened again whenever it fails, as Envoy does.
func simulatedProxy(a args, i int, r *received) {
	ns := fmt.Sprintf("ns%d", i%a.namespaces)
	pod := fmt.Sprintf("client-%d", i)
	// Addresses outside the mesh's endpoints: the proxies are clients of
	// every service and the workload of none, as bench-control-plane's.
	ip := fmt.Sprintf("10.251.%d.%d", (i/250)%250, i%250+1)
	meta, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":       ns,
		"NAME":            pod,
		"CLUSTER_ID":      "Kubernetes",
		"ISTIO_VERSION":   "1.31.0",
		"INSTANCE_IPS":    ip,
		"SERVICE_ACCOUNT": "default",
		"WORKLOAD_NAME":   "client",
		"MESH_ID":         "cluster.local",
		"LABELS":          map[string]any{"app": "client"},
	})
	if err != nil {
		panic(err)
	}
	node := &core.Node{
		Id:            fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, pod, ns, ns),
		Cluster:       "client." + ns,
		Metadata:      meta,
		UserAgentName: "envoy",
	}
	for attempt := range maxStreams {
		if attempt > 0 {
			r.mu.Lock()
			r.reconnects++
			r.mu.Unlock()
			time.Sleep(time.Duration(200+(i*37+attempt*101)%500) * time.Millisecond)
		}
		err := oneStream(a.addr, node, r)
		if err != nil && (attempt+1 == maxStreams || streamErrors.Add(1) <= 5) {
			fmt.Fprintf(os.Stderr, "proxy %s: stream %d: %v\n", node.Id, attempt, err)
		}
	}
}

// oneStream is one ADS stream, subscribing and ACKing as Envoy does.
func oneStream(addr string, node *core.Node, r *received) error {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// Per type: the names subscribed (clusters and listeners: all of them,
	// by no names) and the last response's version and nonce.
	names := map[string][]string{}
	version := map[string]string{}
	nonce := map[string]string{}
	subscribed := map[string]bool{}
	request := func(typeURL string) error {
		// As Envoy: the node on the stream's first request only.
		first := len(subscribed) == 0
		subscribed[typeURL] = true
		return stream.Send(&discovery.DiscoveryRequest{
			Node:          nodeOnce(node, first),
			TypeUrl:       typeURL,
			VersionInfo:   version[typeURL],
			ResponseNonce: nonce[typeURL],
			ResourceNames: names[typeURL],
		})
	}
	if err := request(typeCluster); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		r.got(resp.TypeUrl, proto.Size(resp))
		version[resp.TypeUrl], nonce[resp.TypeUrl] = resp.VersionInfo, resp.Nonce
		// As Envoy: what a response names is asked for before it is ACKed,
		// and asked again only when the names change.
		var follow string
		var wanted []string
		switch resp.TypeUrl {
		case typeCluster:
			follow, wanted = typeEndpoint, edsClusters(resp)
		case typeListener:
			follow, wanted = typeRoute, routeNames(resp)
		}
		if follow != "" && (!subscribed[follow] || !slices.Equal(wanted, names[follow])) {
			names[follow] = wanted
			if err := request(follow); err != nil {
				return err
			}
		}
		if err := request(resp.TypeUrl); err != nil {
			return err
		}
		if resp.TypeUrl == typeCluster && !subscribed[typeListener] {
			if err := request(typeListener); err != nil {
				return err
			}
		}
	}
}

func nodeOnce(node *core.Node, first bool) *core.Node {
	if first {
		return node
	}
	return nil
}

// edsClusters names the clusters of resp whose endpoints come from EDS,
// reading only each cluster's name (field 1) and type (field 2).
func edsClusters(resp *discovery.DiscoveryResponse) []string {
	const eds = 3 // Cluster.DiscoveryType EDS
	var out []string
	for _, res := range resp.Resources {
		b := res.GetValue()
		var name string
		var typ uint64
		for len(b) > 0 {
			num, wt, n := protowire.ConsumeTag(b)
			if n < 0 {
				break
			}
			b = b[n:]
			switch {
			case num == 1 && wt == protowire.BytesType:
				v, m := protowire.ConsumeBytes(b)
				name, n = string(v), m
			case num == 2 && wt == protowire.VarintType:
				typ, n = protowire.ConsumeVarint(b)
			default:
				n = protowire.ConsumeFieldValue(num, wt, b)
			}
			if n < 0 {
				break
			}
			b = b[n:]
		}
		if typ == eds && name != "" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// routeNames are the route configurations resp's HTTP connection managers load by RDS.
func routeNames(resp *discovery.DiscoveryResponse) []string {
	seen := map[string]bool{}
	for _, res := range resp.Resources {
		var l listener.Listener
		if err := res.UnmarshalTo(&l); err != nil {
			continue
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				tc := f.GetTypedConfig()
				if tc == nil || tc.TypeUrl != typeHCM {
					continue
				}
				var m hcm.HttpConnectionManager
				if err := tc.UnmarshalTo(&m); err != nil {
					continue
				}
				if rds := m.GetRds(); rds != nil {
					seen[rds.RouteConfigName] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func totalBytes(proxies []*received) int {
	total := 0
	for _, p := range proxies {
		p.mu.Lock()
		total += p.bytes
		p.mu.Unlock()
	}
	return total
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Round(float64(len(sorted)-1) * p))
	return sorted[min(i, len(sorted)-1)]
}

func procKiB(pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			if len(f) > 1 {
				v, _ := strconv.Atoi(f[1])
				return v
			}
		}
	}
	return 0
}

// cpuSeconds is the process's user + system time so far.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	k, _ := strconv.Atoi(f[12])
	return float64(u+k) / 100
}

// convergence reads istiod's own pilot_proxy_convergence_time histogram
// (empty without a monitoring address or when it cannot be read).
func convergence(addr string) map[string]float64 {
	out := map[string]float64{}
	if addr == "" {
		return out
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds-load: istiod's metrics:", err)
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "pilot_proxy_convergence_time") {
			if i := strings.LastIndex(line, " "); i > 0 {
				if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
					out[line[:i]] = v
				}
			}
		}
	}
	return out
}
