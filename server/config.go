package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imageflowcanvas/imageflow/bus"
	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/redact"
	"github.com/imageflowcanvas/imageflow/server/rest"
)

// Config is the whole configuration of `imageflow serve`. It is filled in one
// pipeline: Defaults → YAML file → IFC_* environment → flags → Validate.
type Config struct {
	// DataDir holds the JetStream store, listen.json and generated files.
	DataDir string `yaml:"data"`
	// HTTPAddr serves the UI, REST API, WHIP/WHEP and /metrics.
	HTTPAddr string `yaml:"http"`
	// HTTPSAddr serves the same over TLS (phones open the camera for the
	// /publish page only over HTTPS); empty disables.
	HTTPSAddr string `yaml:"https"`
	// TLSCert and TLSKey are PEM files; empty generates a self-signed
	// certificate under <data>/tls on first start.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// RTSPAddr serves RTSP readers and publishers; empty disables RTSP.
	RTSPAddr string `yaml:"rtsp"`
	// RTSPUDPAddr serves RTSP over UDP (RTP on this even port, RTCP on the
	// next), which VLC and most NVRs try first; empty serves TCP only.
	RTSPUDPAddr string `yaml:"rtsp_udp"`
	// RTSPReadTimeout closes RTSP connections that do not complete a
	// request within it (idle or half-sent) and publishers silent that long.
	RTSPReadTimeout time.Duration `yaml:"rtsp_read_timeout"`
	// GRPCAddr serves the streaming and processor gRPC services.
	GRPCAddr string `yaml:"grpc"`
	// WebRTCUDPAddr is the one UDP port all WebRTC peers share.
	WebRTCUDPAddr string `yaml:"webrtc_udp"`
	// WebRTCTCPAddr opens ICE-TCP for networks that block UDP; empty disables.
	WebRTCTCPAddr string `yaml:"webrtc_tcp"`
	// WebRTCHosts are the addresses announced to peers instead of the
	// machine's own (NAT 1:1, e.g. a public IP).
	WebRTCHosts []string `yaml:"webrtc_hosts"`
	// ICEServers are STUN/TURN servers handed to every peer.
	ICEServers []iwebrtc.ICEServer `yaml:"ice_servers"`
	// WebRTCMaxPending and WebRTCMaxPendingPerClient cap WHIP/WHEP sessions
	// answered but not yet connected, in total (over: 503) and per client
	// IP (over: 429); WebRTCConnectTimeout ends such a session, freeing its
	// place and a WHIP camera for another publisher. 0 means 100, 10, 10s.
	WebRTCMaxPending          int           `yaml:"webrtc_max_pending"`
	WebRTCMaxPendingPerClient int           `yaml:"webrtc_max_pending_per_client"`
	WebRTCConnectTimeout      time.Duration `yaml:"webrtc_connect_timeout"`
	// WebRTCTranscodeWidth and WebRTCTranscodeBitrate size the H.264
	// transcode browsers get of H.265 and MJPEG cameras (made once per
	// camera while watched; never wider than the camera). 0 means 1280
	// (720p for 16:9) and 2 Mbit/s.
	WebRTCTranscodeWidth   int `yaml:"webrtc_transcode_width"`
	WebRTCTranscodeBitrate int `yaml:"webrtc_transcode_bitrate"`
	// NATSAddr opens the NATS client port; empty (default) keeps it closed.
	NATSAddr     string `yaml:"nats"`
	NATSUser     string `yaml:"nats_user"`
	NATSPassword string `yaml:"nats_password"`
	// NATSURL is for `imageflow worker` only: instead of joining a cluster
	// by routes, the worker connects to this node's client port (nats://
	// host:port) with nats_user and nats_password.
	NATSURL string `yaml:"nats_url"`
	// LivePipelines says where the live pipelines of this node's cameras
	// run: "local" (here, the default) or "shared" (on an `imageflow
	// worker` while one is up, here otherwise; docs/cluster.md).
	LivePipelines string `yaml:"live_pipelines"`
	// Prefix starts every bus subject.
	Prefix string `yaml:"prefix"`
	// VideoWindow is how long the bus keeps video for replay by NATS clients;
	// 0 keeps none (live joiners start on the GOP the hub keeps either way).
	VideoWindow time.Duration `yaml:"video_window"`
	// EventsRetention is how long detection events and their snapshots are
	// kept.
	EventsRetention time.Duration `yaml:"events_retention"`
	// MQTTAddr opens nats-server's MQTT listener: MQTT clients read events on
	// <prefix>/events/<camera>, with an API token as password when auth is on.
	MQTTAddr string `yaml:"mqtt"`

	// APITokens, when not empty, are the bearer tokens every API and media
	// request must carry; each has the admin role.
	APITokens []string `yaml:"api_tokens"`
	// APIKeys are tokens stored as their SHA-256 with a role: viewer,
	// operator or admin (`imageflow token hash` or `sha256sum` gives the hash).
	APIKeys []APIKey `yaml:"api_keys"`
	// JWTJWKSURL, when set, also accepts JSON Web Tokens (RS256, ES256)
	// signed by a key of this JWKS; the role comes from JWTRoleClaim.
	JWTJWKSURL string `yaml:"jwt_jwks_url"`
	// JWTIssuer and JWTAudience, when set, must match the token's iss and aud.
	JWTIssuer   string `yaml:"jwt_issuer"`
	JWTAudience string `yaml:"jwt_audience"`
	// JWTRoleClaim names the claim holding the role (a string or a list).
	JWTRoleClaim string `yaml:"jwt_role_claim"`
	// CORSOrigins may send state-changing requests (POST, PUT, PATCH,
	// DELETE) from a browser page of another origin; "*" allows any.
	CORSOrigins []string `yaml:"cors_origins"`
	// RateLimit is how many requests per second one client (a token, or an
	// IP without one) may send; more get 429 with Retry-After. 0 disables.
	RateLimit float64 `yaml:"rate_limit"`
	// RateBurst is how many requests a client may send at once.
	RateBurst int `yaml:"rate_burst"`
	// AuthFailuresPerMinute is how many failed authentications a client
	// may make per minute before it gets 429 for a while. 0 disables.
	AuthFailuresPerMinute int `yaml:"auth_failures_per_minute"`
	// HTTPHeaderTimeout is how long a client has to send a request's
	// headers (a slowloris client is cut off after it).
	HTTPHeaderTimeout time.Duration `yaml:"http_header_timeout"`
	// HTTPReadTimeout is how long a client has to send a request's body
	// after its headers (uploads have UploadTimeout).
	HTTPReadTimeout time.Duration `yaml:"http_read_timeout"`
	// HTTPIdleTimeout closes a keep-alive connection idle this long.
	HTTPIdleTimeout time.Duration `yaml:"http_idle_timeout"`
	// UploadTimeout is how long a batch upload's body may take.
	UploadTimeout time.Duration `yaml:"upload_timeout"`
	// GRPCTLS serves gRPC over TLS with the HTTPS certificate.
	GRPCTLS bool `yaml:"grpc_tls"`
	// MetricsAuth makes /metrics require a token too.
	MetricsAuth bool `yaml:"metrics_auth"`
	// HealthAuth makes /api/v1/health and /ready require a token too.
	HealthAuth bool `yaml:"health_auth"`

	// BodyLimit caps a request body (bytes) outside uploads.
	BodyLimit int `yaml:"body_limit"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// S3Endpoint (host:port) stores blobs in MinIO/S3 instead of the
	// JetStream Object Store; the bucket is created when missing.
	S3Endpoint  string `yaml:"s3_endpoint"`
	S3Bucket    string `yaml:"s3_bucket"`
	S3AccessKey string `yaml:"s3_access_key"`
	S3SecretKey string `yaml:"s3_secret_key"`
	S3TLS       bool   `yaml:"s3_tls"`
	S3Region    string `yaml:"s3_region"`

	// BatchWorkers is how many batch files run at once.
	BatchWorkers int `yaml:"batch_workers"`
	// UploadMaxFileBytes and UploadMaxFiles bound one batch upload.
	UploadMaxFileBytes int64 `yaml:"upload_max_file_bytes"`
	UploadMaxFiles     int   `yaml:"upload_max_files"`
	// UploadMaxBytes bounds one whole upload request.
	UploadMaxBytes int64 `yaml:"upload_max_bytes"`
	// BatchRetention deletes finished executions and their data this long
	// after they finished; 0 keeps them until deleted.
	BatchRetention time.Duration `yaml:"batch_retention"`
	// RecordSegment is how long a recording segment grows before it is cut
	// at the next keyframe.
	RecordSegment time.Duration `yaml:"record_segment"`
	// RecordMaxBytes caps every camera's recordings together (oldest
	// segments go first); 0: no cap.
	RecordMaxBytes int64 `yaml:"record_max_bytes"`

	// KafkaBrokers, when set, mirror progress, metrics and archived frames
	// into Kafka topics <kafka_topic_prefix>.progress|metrics|archive|events.
	KafkaBrokers     []string `yaml:"kafka_brokers"`
	KafkaTopicPrefix string   `yaml:"kafka_topic_prefix"`
	// KafkaFormat is json (for Kafka Connect's JsonConverter) or protobuf.
	KafkaFormat string `yaml:"kafka_format"`
	// Node names this server on <prefix>.metrics.<node>; in a cluster it is
	// also the NATS server name and the owner shown on cameras, so it must
	// stay the same across restarts.
	Node string `yaml:"node"`
	// Cluster settings (docs/cluster.md); an empty cluster_name runs alone.
	ClusterName     string   `yaml:"cluster_name"`
	ClusterListen   string   `yaml:"cluster_listen"`
	ClusterRoutes   []string `yaml:"cluster_routes"`
	ClusterUser     string   `yaml:"cluster_user"`
	ClusterPassword string   `yaml:"cluster_password"`
	// NodeLabels are what this node offers cameras restricted by labels
	// ("gpu", "site-b"): such a camera runs only on a node with all of them.
	NodeLabels []string `yaml:"node_labels"`
	// ClusterTLSCert, ClusterTLSKey and ClusterTLSCA put the routes under
	// mutual TLS: this node's certificate and key, and the CA every peer's
	// certificate must come from.
	ClusterTLSCert string `yaml:"cluster_tls_cert"`
	ClusterTLSKey  string `yaml:"cluster_tls_key"`
	ClusterTLSCA   string `yaml:"cluster_tls_ca"`
	// LeafnodeListen opens a hub's leaf node listener (docs/cluster.md).
	LeafnodeListen string `yaml:"leafnode_listen"`
	// LeafnodeRemotes are the hub's leaf node URLs: this box becomes a
	// leaf node of that hub, with its own JetStream domain (its node name).
	LeafnodeRemotes []string `yaml:"leafnode_remotes"`
	// LeafnodeUser and LeafnodePassword: required from leaves by a hub,
	// presented to the hub by a leaf.
	LeafnodeUser     string `yaml:"leafnode_user"`
	LeafnodePassword string `yaml:"leafnode_password"`
	// LeafnodeTLSCert, LeafnodeTLSKey and LeafnodeTLSCA put leaf node links
	// under mutual TLS, as the cluster_tls_* keys do for routes.
	LeafnodeTLSCert string `yaml:"leafnode_tls_cert"`
	LeafnodeTLSKey  string `yaml:"leafnode_tls_key"`
	LeafnodeTLSCA   string `yaml:"leafnode_tls_ca"`
	// LeafSources names the leaves (their node names) whose progress,
	// results, metrics, events, status and archive a hub copies into
	// streams of its own (<STREAM>_<leaf>).
	LeafSources []string `yaml:"leaf_sources"`
	// Replicas is how many copies (1 or 3) streams, buckets and the object
	// store keep in a cluster.
	Replicas int `yaml:"replicas"`
	// MetricsInterval is how often a metrics snapshot goes on the bus.
	MetricsInterval time.Duration `yaml:"metrics_interval"`
	// ArchiveInterval is how often an archived camera keeps a frame.
	ArchiveInterval time.Duration `yaml:"archive_interval"`

	// DetectFPS is how many frames per second a camera's pipeline sees.
	DetectFPS float64 `yaml:"detect_fps"`
	// DetectWidth is the width frames are scaled to for processing.
	DetectWidth int `yaml:"detect_width"`
	// OpenCVThreads is how many threads each of OpenCV's parallel loops
	// uses (builtin.SetOpenCVThreads): 1 spends the least CPU per camera,
	// 0 lets OpenCV use every core for one frame (lower latency for a
	// single camera with a heavy model).
	OpenCVThreads int `yaml:"opencv_threads"`
	// ModelsDir is the only directory pipeline steps read model, class-list
	// and cascade files from (besides OpenCV's shipped cascades and the
	// models the setup installs, modelfiles.Installed, which a file of the
	// same name here replaces); empty means <data>/models.
	ModelsDir string `yaml:"models_dir"`
	// Demo creates the demo camera and pipeline on first start.
	Demo bool `yaml:"demo"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	// MediaDirs are the only directories file:// sources may play from
	// (regular files; symlinks must resolve inside); empty means
	// <data>/media and the demo clip's directory.
	MediaDirs []string `yaml:"media_dirs"`
	// DenyHosts are CIDR ranges, addresses and host names that sources and
	// grpc:// steps may not reach, checked on save and after DNS
	// resolution; unset means netpolicy.DefaultDeny (link-local and cloud
	// metadata hosts), an empty list allows every host.
	DenyHosts []string `yaml:"deny_hosts"`
	// GrafanaURL, when set, is the Grafana dashboard the web UI's
	// monitoring page links to.
	GrafanaURL string `yaml:"grafana_url"`
}

// ModelsPath is where pipeline steps read model files: ModelsDir, or
// <data>/models when it is empty.
func (c *Config) ModelsPath() string {
	if c.ModelsDir != "" {
		return c.ModelsDir
	}
	return filepath.Join(c.DataDir, "models")
}

// APIKey is a hashed API token with its role.
type APIKey struct {
	Role   string `yaml:"role"`
	SHA256 string `yaml:"sha256"`
}

// Values of live_pipelines.
const (
	// LivePipelinesLocal runs a camera's live pipeline on its ingest node.
	LivePipelinesLocal = "local"
	// LivePipelinesShared hands it to a worker while one is up.
	LivePipelinesShared = "shared"
)

// Defaults is what a newcomer gets with no configuration at all.
func Defaults() Config {
	return Config{
		DataDir:               "./data",
		HTTPAddr:              ":8080",
		RTSPAddr:              ":8554",
		RTSPUDPAddr:           ":8000",
		RTSPReadTimeout:       10 * time.Second,
		GRPCAddr:              ":50051",
		WebRTCUDPAddr:         ":8189",
		Prefix:                "ifc",
		VideoWindow:           0,
		EventsRetention:       14 * 24 * time.Hour,
		BodyLimit:             4 << 20,
		RateLimit:             100,
		RateBurst:             200,
		AuthFailuresPerMinute: 30,
		HTTPHeaderTimeout:     10 * time.Second,
		HTTPReadTimeout:       time.Minute,
		HTTPIdleTimeout:       2 * time.Minute,
		UploadTimeout:         10 * time.Minute,
		ShutdownTimeout:       5 * time.Second,
		DetectFPS:             5,
		KafkaTopicPrefix:      "imageflow",
		KafkaFormat:           "json",
		Node:                  defaultNode(),
		MetricsInterval:       10 * time.Second,
		ArchiveInterval:       time.Second,
		S3Bucket:              "imageflow",
		BatchWorkers:          2,
		LivePipelines:         LivePipelinesLocal,
		UploadMaxFileBytes:    32 << 20,
		UploadMaxFiles:        1000,
		UploadMaxBytes:        256 << 20,
		BatchRetention:        7 * 24 * time.Hour,
		RecordSegment:         10 * time.Second,
		DetectWidth:           640,
		OpenCVThreads:         1,
		Demo:                  true,
		LogLevel:              "info",
	}
}

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("config")

// LoadFile merges a YAML file over c; unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	// An empty file decodes to io.EOF and changes nothing.
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return nil
}

// LoadEnv merges IFC_<YAML KEY IN UPPER CASE> variables over c, e.g.
// IFC_HTTP=:9090, IFC_API_TOKENS=a,b.
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		name := "IFC_" + strings.ToUpper(key)
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setField(v.Field(i), raw); err != nil {
			return fmt.Errorf("%w: %s=%q: %v", ErrConfig, name, redactIfSecret(key, raw), err)
		}
	}
	return nil
}

func redactIfSecret(key, value string) string {
	if strings.Contains(key, "password") || strings.Contains(key, "token") || strings.Contains(key, "secret") {
		return "***"
	}
	return value
}

func setField(f reflect.Value, raw string) error {
	switch f.Interface().(type) {
	case string:
		f.SetString(raw)
	case bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("want true or false")
		}
		f.SetBool(b)
	case float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("want a number")
		}
		f.SetFloat(n)
	case int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("want an integer")
		}
		f.SetInt(n)
	case int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return errors.New("want an integer")
		}
		f.SetInt(int64(n))
	case time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New(`want a duration such as "10s"`)
		}
		f.SetInt(int64(d))
	case []iwebrtc.ICEServer:
		// IFC_ICE_SERVERS=stun:host:3478,stun:other:3478 (TURN with
		// credentials needs the YAML file).
		var out []iwebrtc.ICEServer
		for _, u := range strings.Split(raw, ",") {
			if u = strings.TrimSpace(u); u != "" {
				out = append(out, iwebrtc.ICEServer{URLs: []string{u}})
			}
		}
		f.Set(reflect.ValueOf(out))
	case []APIKey:
		// IFC_API_KEYS=viewer:<sha256 hex>,operator:<sha256 hex>
		var out []APIKey
		for _, kv := range strings.Split(raw, ",") {
			if kv = strings.TrimSpace(kv); kv == "" {
				continue
			}
			role, hash, ok := strings.Cut(kv, ":")
			if !ok {
				return errors.New("want role:sha256hex,...")
			}
			out = append(out, APIKey{Role: role, SHA256: hash})
		}
		f.Set(reflect.ValueOf(out))
	case []string:
		var out []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		f.Set(reflect.ValueOf(out))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}

// BindFlags registers the command-line flags that override c.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory")
	fs.StringVar(&c.HTTPAddr, "http", c.HTTPAddr, "HTTP address (UI, REST, WHIP/WHEP, /metrics)")
	fs.StringVar(&c.HTTPSAddr, "https", c.HTTPSAddr, "HTTPS address (self-signed certificate unless tls_cert/tls_key are set; empty disables)")
	fs.StringVar(&c.RTSPAddr, "rtsp", c.RTSPAddr, "RTSP address (empty disables)")
	fs.StringVar(&c.RTSPUDPAddr, "rtsp-udp", c.RTSPUDPAddr, "RTSP over UDP: RTP on this even port, RTCP on the next (empty: TCP only)")
	fs.StringVar(&c.GRPCAddr, "grpc", c.GRPCAddr, "gRPC address (empty disables)")
	fs.StringVar(&c.WebRTCUDPAddr, "webrtc-udp", c.WebRTCUDPAddr, "UDP address shared by all WebRTC peers")
	fs.StringVar(&c.WebRTCTCPAddr, "webrtc-tcp", c.WebRTCTCPAddr, "TCP address for ICE-TCP when UDP is blocked (empty disables)")
	fs.StringVar(&c.NATSAddr, "nats", c.NATSAddr, "NATS client port address (off when empty; needs nats_user/nats_password)")
	fs.BoolVar(&c.Demo, "demo", c.Demo, "create the demo camera on first start")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
}

// Validate checks every field and names the first bad one with its value.
func (c *Config) Validate() error {
	bad := func(field string, value any, why string) error {
		return fmt.Errorf("%w: %s: %v: %s", ErrConfig, field, value, why)
	}
	if c.DataDir == "" {
		return bad("data", `""`, "must not be empty")
	}
	if err := checkAddr(c.HTTPAddr, false); err != nil {
		return bad("http", strconv.Quote(c.HTTPAddr), err.Error())
	}
	for _, a := range []struct{ name, value string }{{"https", c.HTTPSAddr}, {"rtsp", c.RTSPAddr}, {"rtsp_udp", c.RTSPUDPAddr}, {"grpc", c.GRPCAddr}, {"webrtc_udp", c.WebRTCUDPAddr}, {"webrtc_tcp", c.WebRTCTCPAddr}, {"nats", c.NATSAddr}, {"mqtt", c.MQTTAddr}} {
		if err := checkAddr(a.value, true); err != nil {
			return bad(a.name, strconv.Quote(a.value), err.Error())
		}
	}
	if c.NATSAddr != "" && (c.NATSUser == "" || c.NATSPassword == "") {
		return bad("nats", strconv.Quote(c.NATSAddr), "a NATS client port requires nats_user and nats_password")
	}
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, ".*> \t") {
		return bad("prefix", strconv.Quote(c.Prefix), "must be one subject token")
	}
	if c.EventsRetention <= 0 {
		return bad("events_retention", c.EventsRetention, "must be positive")
	}
	if c.VideoWindow < 0 {
		return bad("video_window", c.VideoWindow, "must not be negative")
	}
	for i, tok := range c.APITokens {
		if len(tok) < 8 {
			return bad(fmt.Sprintf("api_tokens[%d]", i), "***", "a token needs at least 8 characters")
		}
	}
	for i, k := range c.APIKeys {
		if _, ok := rest.ParseRole(k.Role); !ok {
			return bad(fmt.Sprintf("api_keys[%d].role", i), strconv.Quote(k.Role), "want viewer, operator or admin")
		}
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != sha256.Size {
			return bad(fmt.Sprintf("api_keys[%d].sha256", i), "***", "want the 64 hex digits of the token's SHA-256")
		}
	}
	if c.GrafanaURL != "" && !strings.HasPrefix(c.GrafanaURL, "https://") && !strings.HasPrefix(c.GrafanaURL, "http://") {
		return bad("grafana_url", strconv.Quote(c.GrafanaURL), "want an http:// or https:// URL")
	}
	if c.JWTJWKSURL != "" && !strings.HasPrefix(c.JWTJWKSURL, "https://") && !strings.HasPrefix(c.JWTJWKSURL, "http://") {
		return bad("jwt_jwks_url", strconv.Quote(c.JWTJWKSURL), "want an http:// or https:// URL")
	}
	for i, o := range c.CORSOrigins {
		if o != "*" && (!strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") || strings.HasSuffix(o, "/")) {
			return bad(fmt.Sprintf("cors_origins[%d]", i), strconv.Quote(o), `want an origin such as "https://example.com" (scheme and host, no path) or "*"`)
		}
	}
	if c.RateLimit < 0 {
		return bad("rate_limit", c.RateLimit, "must not be negative (0 disables)")
	}
	if c.RateLimit > 0 && c.RateBurst < 1 {
		return bad("rate_burst", c.RateBurst, "must be at least 1")
	}
	if c.AuthFailuresPerMinute < 0 {
		return bad("auth_failures_per_minute", c.AuthFailuresPerMinute, "must not be negative (0 disables)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"http_header_timeout", c.HTTPHeaderTimeout}, {"http_read_timeout", c.HTTPReadTimeout}, {"http_idle_timeout", c.HTTPIdleTimeout}, {"upload_timeout", c.UploadTimeout}} {
		if d.v < 100*time.Millisecond {
			return bad(d.name, d.v, "at least 100ms")
		}
	}
	if c.GRPCTLS && (c.GRPCAddr == "" || c.HTTPSAddr == "" && c.TLSCert == "") {
		return bad("grpc_tls", c.GRPCTLS, "needs grpc and a certificate (https or tls_cert/tls_key)")
	}
	for i, ice := range c.ICEServers {
		if len(ice.URLs) == 0 {
			return bad(fmt.Sprintf("ice_servers[%d].urls", i), "[]", "needs at least one stun: or turn: URL")
		}
		for _, u := range ice.URLs {
			if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return bad(fmt.Sprintf("ice_servers[%d].urls", i), strconv.Quote(u), "want stun:, stuns:, turn: or turns:")
			}
		}
	}
	for i, h := range c.WebRTCHosts {
		if net.ParseIP(h) == nil {
			return bad(fmt.Sprintf("webrtc_hosts[%d]", i), strconv.Quote(h), "want an IP address")
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls_cert", strconv.Quote(c.TLSCert), "tls_cert and tls_key go together")
	}
	if c.S3Endpoint != "" {
		if err := checkAddr(c.S3Endpoint, false); err != nil {
			return bad("s3_endpoint", strconv.Quote(c.S3Endpoint), "want host:port: "+err.Error())
		}
		if c.S3Bucket == "" || c.S3AccessKey == "" || c.S3SecretKey == "" {
			return bad("s3_endpoint", strconv.Quote(c.S3Endpoint), "needs s3_bucket, s3_access_key and s3_secret_key")
		}
	}
	if c.BatchWorkers < 1 || c.BatchWorkers > 64 {
		return bad("batch_workers", c.BatchWorkers, "want 1..64")
	}
	if c.UploadMaxFileBytes < 1024 {
		return bad("upload_max_file_bytes", c.UploadMaxFileBytes, "must be at least 1024")
	}
	if c.RecordSegment < time.Second || c.RecordSegment > 10*time.Minute {
		return bad("record_segment", c.RecordSegment, "between 1s and 10m")
	}
	if c.RecordMaxBytes < 0 {
		return bad("record_max_bytes", c.RecordMaxBytes, "must not be negative (0: no cap)")
	}
	if c.BatchRetention < 0 {
		return bad("batch_retention", c.BatchRetention, "must not be negative (0 keeps executions)")
	}
	if c.UploadMaxBytes < c.UploadMaxFileBytes || c.UploadMaxBytes > 1<<40 {
		return bad("upload_max_bytes", c.UploadMaxBytes, "must be at least upload_max_file_bytes")
	}
	if c.UploadMaxFiles < 1 {
		return bad("upload_max_files", c.UploadMaxFiles, "must be at least 1")
	}
	for i, b := range c.KafkaBrokers {
		if err := checkAddr(b, false); err != nil {
			return bad(fmt.Sprintf("kafka_brokers[%d]", i), strconv.Quote(b), "want host:port")
		}
	}
	if c.KafkaFormat != "json" && c.KafkaFormat != "protobuf" {
		return bad("kafka_format", strconv.Quote(c.KafkaFormat), "want json or protobuf")
	}
	if c.KafkaTopicPrefix == "" || strings.ContainsAny(c.KafkaTopicPrefix, " /\\") {
		return bad("kafka_topic_prefix", strconv.Quote(c.KafkaTopicPrefix), "want a Kafka topic name prefix")
	}
	if c.Node == "" || strings.ContainsAny(c.Node, ".*> \t") || len(c.Node) > 64 {
		return bad("node", strconv.Quote(c.Node), "want letters, digits, '-' and '_'")
	}
	if err := c.validateCluster(bad); err != nil {
		return err
	}
	if c.LivePipelines != LivePipelinesLocal && c.LivePipelines != LivePipelinesShared {
		return bad("live_pipelines", strconv.Quote(c.LivePipelines), "want local or shared")
	}
	if c.NATSURL != "" {
		if u, err := url.Parse(c.NATSURL); err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
			return bad("nats_url", strconv.Quote(redact.URL(c.NATSURL)), "want nats://host:port")
		}
		if c.ClusterName != "" {
			return bad("nats_url", strconv.Quote(redact.URL(c.NATSURL)), "a worker joins by cluster routes or by nats_url, not both")
		}
	}
	if c.WebRTCMaxPending < 0 {
		return bad("webrtc_max_pending", c.WebRTCMaxPending, "must not be negative (0 takes the default)")
	}
	if c.WebRTCMaxPendingPerClient < 0 {
		return bad("webrtc_max_pending_per_client", c.WebRTCMaxPendingPerClient, "must not be negative (0 takes the default)")
	}
	if c.WebRTCTranscodeWidth < 0 || c.WebRTCTranscodeWidth%2 != 0 || c.WebRTCTranscodeWidth > 8192 {
		return bad("webrtc_transcode_width", c.WebRTCTranscodeWidth, "must be even, 0..8192 (0 takes the default)")
	}
	if c.WebRTCTranscodeBitrate < 0 || c.WebRTCTranscodeBitrate > 100_000_000 {
		return bad("webrtc_transcode_bitrate", c.WebRTCTranscodeBitrate, "must be 0..100000000 bit/s (0 takes the default)")
	}
	if c.WebRTCConnectTimeout < 0 {
		return bad("webrtc_connect_timeout", c.WebRTCConnectTimeout, "must not be negative (0 takes the default)")
	}
	if c.RTSPReadTimeout < 100*time.Millisecond {
		return bad("rtsp_read_timeout", c.RTSPReadTimeout, "at least 100ms")
	}
	if c.MetricsInterval < time.Second {
		return bad("metrics_interval", c.MetricsInterval, "at least 1s")
	}
	if c.ArchiveInterval < 100*time.Millisecond {
		return bad("archive_interval", c.ArchiveInterval, "at least 100ms")
	}
	if c.DetectFPS <= 0 || c.DetectFPS > 60 {
		return bad("detect_fps", c.DetectFPS, "want 0 < fps <= 60")
	}
	if c.DetectWidth < 64 || c.DetectWidth > 4096 {
		return bad("detect_width", c.DetectWidth, "want 64..4096")
	}
	if c.OpenCVThreads < 0 || c.OpenCVThreads > builtin.MaxOpenCVThreads {
		return bad("opencv_threads", c.OpenCVThreads, fmt.Sprintf("want 0..%d", builtin.MaxOpenCVThreads))
	}
	if c.BodyLimit < 1024 {
		return bad("body_limit", c.BodyLimit, "must be at least 1024")
	}
	if c.ShutdownTimeout <= 0 {
		return bad("shutdown_timeout", c.ShutdownTimeout, "must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", strconv.Quote(c.LogLevel), "want debug, info, warn or error")
	}
	return c.validateSourcePolicy()
}

// tlsTriple checks that a certificate, its key and a CA come all three or
// not at all.
func tlsTriple(bad func(string, any, string) error, prefix, cert, key, ca string) error {
	set := 0
	for _, f := range []string{cert, key, ca} {
		if f != "" {
			set++
		}
	}
	if set != 0 && set != 3 {
		return bad(prefix+"_cert", strconv.Quote(cert), prefix+"_cert, "+prefix+"_key and "+prefix+"_ca go together")
	}
	return nil
}

// validateLeaf checks the leafnode_* fields and leaf_sources (part of Validate).
func (c *Config) validateLeaf(bad func(string, any, string) error) error {
	if err := checkAddr(c.LeafnodeListen, true); err != nil {
		return bad("leafnode_listen", strconv.Quote(c.LeafnodeListen), err.Error())
	}
	for i, r := range c.LeafnodeRemotes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || (u.Scheme != "nats-leaf" && u.Scheme != "nats" && u.Scheme != "tls") {
			return bad(fmt.Sprintf("leafnode_remotes[%d]", i), strconv.Quote(redact.URL(r)), "want nats-leaf://host:port or tls://host:port")
		}
	}
	if len(c.LeafnodeRemotes) > 0 && c.ClusterName != "" {
		return bad("leafnode_remotes", c.LeafnodeRemotes, "a leaf node is one box: not together with cluster_name")
	}
	if (c.LeafnodeUser == "") != (c.LeafnodePassword == "") {
		return bad("leafnode_user", strconv.Quote(c.LeafnodeUser), "leafnode_user and leafnode_password go together")
	}
	if c.LeafnodeListen != "" && c.LeafnodeUser == "" {
		// An open leaf port would let any box publish into the hub's streams.
		return bad("leafnode_listen", strconv.Quote(c.LeafnodeListen), "a leaf node listener requires leafnode_user and leafnode_password")
	}
	if err := tlsTriple(bad, "leafnode_tls", c.LeafnodeTLSCert, c.LeafnodeTLSKey, c.LeafnodeTLSCA); err != nil {
		return err
	}
	if c.LeafnodeTLSCert != "" && c.LeafnodeListen == "" && len(c.LeafnodeRemotes) == 0 {
		return bad("leafnode_tls_cert", strconv.Quote(c.LeafnodeTLSCert), "needs leafnode_listen or leafnode_remotes")
	}
	for i, s := range c.LeafSources {
		if err := bus.ValidateToken(s); err != nil || s == c.Node {
			return bad(fmt.Sprintf("leaf_sources[%d]", i), strconv.Quote(s), "want a leaf's node name (letters, digits, '-', '_'), not this node's")
		}
	}
	if len(c.LeafSources) > 0 && c.LeafnodeListen == "" {
		return bad("leaf_sources", c.LeafSources, "needs leafnode_listen (leaves connect to the hub)")
	}
	return nil
}

// validateCluster checks the cluster_* fields and replicas (part of Validate).
func (c *Config) validateCluster(bad func(string, any, string) error) error {
	if err := c.validateLeaf(bad); err != nil {
		return err
	}
	if err := tlsTriple(bad, "cluster_tls", c.ClusterTLSCert, c.ClusterTLSKey, c.ClusterTLSCA); err != nil {
		return err
	}
	if c.ClusterName == "" {
		if c.ClusterTLSCert != "" {
			return bad("cluster_tls_cert", strconv.Quote(c.ClusterTLSCert), "needs cluster_name")
		}
		if c.Replicas > 1 {
			return bad("replicas", c.Replicas, "more than 1 needs cluster_name")
		}
		if len(c.ClusterRoutes) > 0 {
			return bad("cluster_routes", c.ClusterRoutes, "needs cluster_name")
		}
		if len(c.NodeLabels) > 0 {
			return bad("node_labels", c.NodeLabels, "needs cluster_name")
		}
		return nil
	}
	labels, err := checkLabels("node_labels", c.NodeLabels)
	if err != nil {
		return bad("node_labels", c.NodeLabels, "want up to 16 distinct labels of letters, digits, '-' and '_'")
	}
	c.NodeLabels = labels
	if strings.ContainsAny(c.ClusterName, ".*> \t") {
		return bad("cluster_name", strconv.Quote(c.ClusterName), "want letters, digits, '-' and '_'")
	}
	if c.ClusterListen == "" {
		c.ClusterListen = ":6222"
	}
	if err := checkAddr(c.ClusterListen, false); err != nil {
		return bad("cluster_listen", strconv.Quote(c.ClusterListen), err.Error())
	}
	for i, r := range c.ClusterRoutes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || (u.Scheme != "nats-route" && u.Scheme != "nats" && u.Scheme != "tls") {
			return bad(fmt.Sprintf("cluster_routes[%d]", i), strconv.Quote(redact.URL(r)), "want nats-route://host:port")
		}
	}
	if (c.ClusterUser == "") != (c.ClusterPassword == "") {
		return bad("cluster_user", strconv.Quote(c.ClusterUser), "cluster_user and cluster_password go together")
	}
	if c.Replicas != 0 && c.Replicas != 1 && c.Replicas != 3 {
		return bad("replicas", c.Replicas, "want 1 or 3")
	}
	return nil
}

func checkAddr(addr string, optional bool) error {
	if addr == "" {
		if optional {
			return nil
		}
		return errors.New("must not be empty")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, e.g. :8080 or 127.0.0.1:0")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return errors.New("port must be 0..65535")
	}
	return nil
}
