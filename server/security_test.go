package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	streamv1 "github.com/imageflowcanvas/imageflow/proto/streamv1"
)

// send makes one request with the given headers and returns status, body
// and headers.
func (ts *testServer) send(method, path string, hdr map[string]string, body string) (int, []byte, http.Header) {
	ts.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.base+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header
}

func uploadBody(t *testing.T) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, _ := w.CreateFormFile("files", "a.png")
	fw.Write([]byte("\x89PNG\r\n\x1a\nnot really"))
	w.WriteField("pipeline_json", `{"id":"p","steps":[{"id":"r","processor":"resize","params":{"width":32}}]}`)
	w.Close()
	return buf.String(), w.FormDataContentType()
}

// Issue 8 item 5: another spelling of a path (case, trailing slash) must not
// reach a handler without the token that handler's route needs.
func TestNoAuthBypassByPathSpelling(t *testing.T) {
	const token = "case-token-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	cfg.MetricsAuth = true
	ts := startServer(t, cfg)
	if st, body, _ := ts.do("POST", "/api/v1/cameras", token, map[string]any{"id": "demo", "source": "publish"}); st != 201 {
		t.Fatalf("create with token: %d %s", st, body)
	}
	for _, p := range []string{"/API/v1/cameras", "/Api/V1/Cameras", "/api/v1/cameras/", "/api/v1//cameras", "/api//v1/cameras"} {
		st, body, _ := ts.do("POST", p, "", map[string]any{"id": "x" + strconv.Itoa(len(p)), "source": "publish"})
		if st < 400 {
			t.Errorf("POST %s without token: %d %s", p, st, body)
		}
	}
	for _, p := range []string{"/Api/V1/Cameras/demo", "/API/v1/cameras/demo", "/api/v1/cameras/demo/"} {
		for _, m := range []string{"PUT", "DELETE"} {
			st, body, _ := ts.do(m, p, "", map[string]any{"id": "demo", "source": "publish", "name": "owned"})
			if st < 400 {
				t.Errorf("%s %s without token: %d %s", m, p, st, body)
			}
		}
	}
	ub, ct := uploadBody(t)
	for _, p := range []string{"/API/v1/executions", "/api/v1/executions/", "/api/V1/executions"} {
		if st, body, _ := ts.send("POST", p, map[string]string{"Content-Type": ct}, ub); st < 400 {
			t.Errorf("upload to %s without token: %d %s", p, st, body)
		}
	}
	for _, p := range []string{"/API/v1/cameras/demo/whep", "/api/v1/cameras/demo/whep/", "/api/v1/Cameras/demo/whep"} {
		if st, body, _ := ts.send("POST", p, map[string]string{"Content-Type": "application/sdp"}, "v=0\r\n"); st < 400 {
			t.Errorf("WHEP %s without token: %d %s", p, st, body)
		}
	}
	st, body, _ := ts.do("GET", "/api/v1/cameras/demo", token, nil)
	if st != 200 || strings.Contains(string(body), "owned") {
		t.Fatalf("camera changed or gone after the bypass attempts: %d %s", st, body)
	}
	if st, body, _ := ts.do("GET", "/api/v1/cameras", token, nil); st != 200 || strings.Count(string(body), `"id"`) != 1 {
		t.Fatalf("cameras created by the bypass attempts: %s", body)
	}
	for _, p := range []string{"/metrics", "/METRICS", "/metrics/", "/Metrics", "/metrics//"} {
		_, body, _ := ts.do("GET", p, "", nil)
		if strings.Contains(string(body), "imageflow_http_requests_total") {
			t.Errorf("GET %s without token served metrics", p)
		}
	}
}

// Issue 8 item 10: ?token= works on the WebSocket/SSE routes only, not on
// any path that happens to end in /ws or /events.
func TestTokenQueryOnlyOnStreamRoutes(t *testing.T) {
	const token = "query-token-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	ts := startServer(t, cfg)
	for _, id := range []string{"ws", "events"} {
		if st, body, _ := ts.do("POST", "/api/v1/cameras", token, map[string]any{"id": id, "source": "publish"}); st != 201 {
			t.Fatalf("create %s: %d %s", id, st, body)
		}
	}
	for _, p := range []string{"/api/v1/cameras/ws", "/api/v1/cameras/events", "/api/v1/cameras", "/api/v1/pipelines/ws"} {
		st, body, _ := ts.do("GET", p+"?token="+token, "", nil)
		expectError(t, st, body, 401, "bearer")
	}
	// On the progress streams the query token is taken (404: no such
	// execution, past the auth check).
	for _, p := range []string{"/api/v1/executions/nope/events", "/api/v1/executions/nope/ws"} {
		st, body, _ := ts.do("GET", p+"?token="+token, "", nil)
		if st != 404 {
			t.Errorf("GET %s?token=: %d %s", p, st, body)
		}
		st, body, _ = ts.do("GET", p+"?token=wrong-token-000000", "", nil)
		expectError(t, st, body, 401, "invalid bearer token")
	}
}

// Issue 8 item 10: a refused request is counted under the route it asked
// for, not under "/".
func TestUnauthorizedLabelledWithRoute(t *testing.T) {
	const token = "label-token-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	ts := startServer(t, cfg)
	ts.do("GET", "/api/v1/cameras", "", nil)
	ts.do("DELETE", "/api/v1/pipelines/x", "", nil)
	_, body, _ := ts.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`imageflow_http_requests_total{method="GET",route="/api/v1/cameras",status="401"} 1`,
		`imageflow_http_requests_total{method="DELETE",route="/api/v1/pipelines/:id",status="401"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(body), `route="/",status="401"`) {
		t.Error(`401 counted under route "/"`)
	}
}

func sha(tok string) string { h := sha256.Sum256([]byte(tok)); return hex.EncodeToString(h[:]) }

// Roles: a viewer watches and reads, an operator also changes things, a
// plain api_tokens entry is an admin.
func TestRoles(t *testing.T) {
	const viewer, operator, admin = "viewer-token-0123456789", "operator-token-0123456789", "admin-token-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{admin}
	cfg.APIKeys = []APIKey{{Role: "viewer", SHA256: sha(viewer)}, {Role: "operator", SHA256: sha(operator)}}
	ts := startServer(t, cfg)
	cam := map[string]any{"id": "c1", "source": "publish"}
	st, body, _ := ts.do("POST", "/api/v1/cameras", viewer, cam)
	expectError(t, st, body, 403, "needs the operator role")
	if st, body, _ := ts.do("POST", "/api/v1/cameras", operator, cam); st != 201 {
		t.Fatalf("operator create: %d %s", st, body)
	}
	if st, body, _ := ts.do("GET", "/api/v1/cameras/c1", viewer, nil); st != 200 {
		t.Fatalf("viewer read: %d %s", st, body)
	}
	st, body, _ = ts.do("DELETE", "/api/v1/cameras/c1", viewer, nil)
	expectError(t, st, body, 403, "operator")
	st, body, _ = ts.send("POST", "/api/v1/cameras/c1/whip", map[string]string{"Authorization": "Bearer " + viewer, "Content-Type": "application/sdp"}, "v=0\r\n")
	expectError(t, st, body, 403, "operator")
	// A viewer may start WHEP (400: the offer is bad, past the role check).
	if st, body, _ := ts.send("POST", "/api/v1/cameras/c1/whep", map[string]string{"Authorization": "Bearer " + viewer, "Content-Type": "application/sdp"}, "v=0\r\n"); st == 401 || st == 403 {
		t.Fatalf("viewer WHEP: %d %s", st, body)
	}
	ub, ct := uploadBody(t)
	st, body, _ = ts.send("POST", "/api/v1/executions", map[string]string{"Authorization": "Bearer " + viewer, "Content-Type": ct}, ub)
	expectError(t, st, body, 403, "operator")
	if st, body, _ := ts.do("DELETE", "/api/v1/cameras/c1", admin, nil); st != 204 {
		t.Fatalf("admin delete: %d %s", st, body)
	}
	if st, _, _ := ts.do("GET", "/api/v1/cameras", "not-a-key-0123456789", nil); st != 401 {
		t.Fatalf("unknown token: %d", st)
	}

	// gRPC: Process needs an operator.
	conn, err := grpc.NewClient(ts.srv.Addrs().GRPC, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := streamv1.NewStreamServiceClient(conn)
	for _, c := range []struct {
		tok  string
		want codes.Code
	}{{"", codes.Unauthenticated}, {viewer, codes.PermissionDenied}, {operator, codes.OK}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if c.tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.tok)
		}
		stream, err := client.Process(ctx)
		if err == nil {
			err = stream.Send(&streamv1.StreamRequest{Pipeline: "nope"})
			if err == nil {
				_, err = stream.Recv()
			}
		}
		cancel()
		got := status.Code(err)
		if c.want == codes.OK {
			if got == codes.Unauthenticated || got == codes.PermissionDenied {
				t.Errorf("gRPC Process as operator: %v", err)
			}
		} else if got != c.want {
			t.Errorf("gRPC Process with %q: %v, want %v", c.tok, err, c.want)
		}
	}
}

// CORS: a page of another origin cannot change anything through a
// victim's browser, text/plain (no preflight) included.
func TestCrossOriginWritesRefused(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CORSOrigins = []string{"https://console.example"}
	ts := startServer(t, cfg)
	body := `{"id":"evil","source":"publish"}`
	st, out, _ := ts.send("POST", "/api/v1/cameras", map[string]string{"Origin": "https://attacker.example", "Content-Type": "text/plain"}, body)
	expectError(t, st, out, 403, "cross-origin")
	st, out, _ = ts.send("DELETE", "/api/v1/pipelines/x", map[string]string{"Origin": "null"}, "")
	expectError(t, st, out, 403, "cross-origin")
	if st, out, _ := ts.do("GET", "/api/v1/cameras/evil", "", nil); st != 404 {
		t.Fatalf("cross-origin POST created the camera: %d %s", st, out)
	}
	// The UI (same origin), a configured origin and clients without Origin.
	for i, origin := range []string{ts.base, "https://console.example", ""} {
		hdr := map[string]string{"Content-Type": "application/json"}
		if origin != "" {
			hdr["Origin"] = origin
		}
		if st, out, _ := ts.send("POST", "/api/v1/cameras", hdr, fmt.Sprintf(`{"id":"ok%d","source":"publish"}`, i)); st != 201 {
			t.Errorf("POST with Origin %q: %d %s", origin, st, out)
		}
	}
	// A listed origin's preflight is answered; another origin's is not.
	st, _, hdr := ts.send("OPTIONS", "/api/v1/cameras", map[string]string{"Origin": "https://console.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}, "")
	if st != 204 || hdr.Get("Access-Control-Allow-Origin") != "https://console.example" || !strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight of a listed origin: %d %v", st, hdr)
	}
	_, _, hdr = ts.send("OPTIONS", "/api/v1/cameras", map[string]string{"Origin": "https://attacker.example", "Access-Control-Request-Method": "POST"}, "")
	if hdr.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight of another origin allowed: %v", hdr)
	}
	// Reads stay open to any origin (the browser's own CORS rules apply).
	if st, _, _ := ts.send("GET", "/api/v1/cameras", map[string]string{"Origin": "https://attacker.example"}, ""); st != 200 {
		t.Fatalf("cross-origin GET: %d", st)
	}
}

// Issue 8 item 9: per-client request rate with 429 and Retry-After.
func TestRateLimit(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RateLimit, cfg.RateBurst = 5, 5
	ts := startServer(t, cfg)
	limited := 0
	for i := 0; i < 30; i++ {
		st, body, hdr := ts.do("GET", "/api/v1/cameras", "", nil)
		if st == 429 {
			limited++
			expectError(t, st, body, 429, "requests per second")
			if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 {
				t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
			}
		}
	}
	if limited < 20 {
		t.Fatalf("only %d of 30 requests over 5/s were limited", limited)
	}
}

// Issue 8 item 9: wrong tokens are logged (client and route, never the
// token) and a client that keeps failing is locked out, even with a right
// guess.
func TestFailedAuthThrottledAndLogged(t *testing.T) {
	const token = "right-token-0123456789"
	const wrong = "wrong-token-9876543210"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	cfg.AuthFailuresPerMinute = 5
	ts := startServer(t, cfg)
	var codes []int
	for i := 0; i < 10; i++ {
		st, _, _ := ts.do("GET", "/api/v1/pipelines", wrong, nil)
		codes = append(codes, st)
	}
	if codes[0] != 401 || codes[9] != 429 {
		t.Fatalf("statuses of 10 wrong tokens: %v", codes)
	}
	st, body, hdr := ts.do("GET", "/api/v1/pipelines", token, nil)
	expectError(t, st, body, 429, "failed authentications")
	if hdr.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	logs := ts.log.String()
	if !strings.Contains(logs, "authentication failed") || !strings.Contains(logs, "client=127.0.0.1") || !strings.Contains(logs, "route=/api/v1/pipelines") {
		t.Fatalf("failed authentications not logged with client and route:\n%s", logs)
	}
	if strings.Contains(logs, wrong) || strings.Contains(logs, token) {
		t.Fatal("a token is in the logs")
	}
}

// rssMB is this process's resident set size.
func rssMB(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			return float64(kb) / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Issue 8 item 3: requests that announce a huge body cost no memory before
// they are refused: 401 without a token, 413 with one on a JSON route, and
// the server stays up.
func TestHugeContentLengthRefusedBeforeReading(t *testing.T) {
	const token = "body-token-0123456789"
	cfg := testConfig(t.TempDir())
	cfg.APITokens = []string{token}
	ts := startServer(t, cfg)
	addr := ts.srv.Addrs().HTTP
	before := rssMB(t)
	const conns = 12            // times two
	const announced = 250 << 20 // under the old global limit of 256 MiB
	type result struct {
		status int
		err    error
	}
	results := make(chan result, 2*conns)
	var wg sync.WaitGroup
	for i := 0; i < 2*conns; i++ {
		auth, path, want := "", "/api/v1/cameras", 401
		switch i % 3 {
		case 1:
			auth, path, want = "Authorization: Bearer "+token+"\r\n", "/api/v1/pipelines", 413
		case 2: // health is open for GET; a POST is the API's not-found route
			path, want = "/api/v1/health", 401
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, auth, announced)
			// A little of the body, then nothing: the client waits.
			c.Write(bytes.Repeat([]byte("{"), 16<<10))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- result{err: err}
				return
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				err = fmt.Errorf("%s: status %d, want %d", path, resp.StatusCode, want)
			}
			results <- result{status: resp.StatusCode, err: err}
		}()
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Error(r.err)
		}
	}
	after := rssMB(t)
	t.Logf("RSS %.0f MB before, %.0f MB after %d requests announcing %d MB each", before, after, 2*conns, announced>>20)
	if after-before > 150 {
		t.Fatalf("RSS grew by %.0f MB", after-before)
	}
	if st, _, _ := ts.do("GET", "/api/v1/health", "", nil); st != 200 {
		t.Fatalf("server not up: %d", st)
	}
}

// A streamed upload over the JSON body limit still works (it never is held
// whole), and a chunked JSON body over the limit is refused.
func TestUploadStreamsAndChunkedBodyLimited(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.BodyLimit = 4096
	ts := startServer(t, cfg)
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for i := 0; i < 3; i++ {
		fw, _ := w.CreateFormFile("files", fmt.Sprintf("f%d.png", i))
		fw.Write(append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{byte(i)}, 20000)...))
	}
	w.WriteField("pipeline_json", `{"id":"p","steps":[{"id":"r","processor":"resize","params":{"width":32}}]}`)
	w.Close()
	st, body, _ := ts.send("POST", "/api/v1/executions", map[string]string{"Content-Type": w.FormDataContentType()}, buf.String())
	if st != 202 {
		t.Fatalf("upload of %d bytes: %d %s", buf.Len(), st, body)
	}
	// Chunked: no Content-Length to check up front.
	req, _ := http.NewRequest("POST", ts.base+"/api/v1/cameras", io.MultiReader(strings.NewReader(`{"id":"x","name":"`), strings.NewReader(strings.Repeat("a", 10000)), strings.NewReader(`"}`)))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	expectError(t, resp.StatusCode, out, 413, "limit of 4096")
}

// An upload over upload_max_bytes is refused: from its Content-Length
// before it is read, and while streaming when it is chunked.
func TestUploadTotalLimit(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.UploadMaxFileBytes, cfg.UploadMaxBytes = 512<<10, 2<<20
	ts := startServer(t, cfg)
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.WriteField("pipeline_json", `{"id":"p","steps":[{"id":"r","processor":"resize","params":{"width":32}}]}`)
	for i := 0; i < 6; i++ {
		fw, _ := w.CreateFormFile("files", fmt.Sprintf("f%d.png", i))
		fw.Write(append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{byte(i)}, 500<<10)...))
	}
	w.Close()
	// Headers and the start of the body only: the answer must come from
	// Content-Length, before the rest is sent. (A client that sends it all
	// may meet the closed connection first, which is the point.)
	c, err := net.Dial("tcp", ts.srv.Addrs().HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", w.FormDataContentType(), buf.Len())
	c.Write(buf.Bytes()[:64<<10])
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	early, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	body, _ := io.ReadAll(early.Body)
	early.Body.Close()
	expectError(t, early.StatusCode, body, 413, "limit of 2097152")
	// Chunked: the server reads up to the limit and answers; the writer
	// goes on until the server closes, as a real client would.
	cc, err := net.Dial("tcp", ts.srv.Addrs().HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	go func() {
		fmt.Fprintf(cc, "POST /api/v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n", w.FormDataContentType())
		for rest := buf.Bytes(); len(rest) > 0; {
			n := min(len(rest), 64<<10)
			if _, err := fmt.Fprintf(cc, "%x\r\n%s\r\n", n, rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		fmt.Fprint(cc, "0\r\n\r\n")
	}()
	_ = cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(cc), nil)
	if err != nil {
		t.Fatalf("no answer to the chunked upload: %v", err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	expectError(t, resp.StatusCode, out, 413, "upload over 2097152 bytes")
	if st, body, _ := ts.do("GET", "/api/v1/executions", "", nil); st != 200 || !strings.Contains(string(body), `"total":0`) {
		t.Fatalf("a refused upload left an execution: %d %s", st, body)
	}
}

// Issue 8 item 9: a client dribbling its headers (slowloris) is cut off
// after http_header_timeout.
func TestSlowHeadersCutOff(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.HTTPHeaderTimeout = 500 * time.Millisecond
	ts := startServer(t, cfg)
	c, err := net.Dial("tcp", ts.srv.Addrs().HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprint(c, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
	closed := false
	for i := 0; i < 40 && !closed; i++ {
		time.Sleep(100 * time.Millisecond)
		if _, err := fmt.Fprint(c, "X-Slow: 1\r\n"); err != nil {
			closed = true
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [512]byte
		if n, err := c.Read(b[:]); n > 0 || (err != nil && !isTimeout(err)) {
			closed = true
		}
	}
	if !closed {
		t.Fatalf("connection still open after %v of dribbled headers", time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cut off only after %v", d)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TLS for the gRPC listener with the HTTPS certificate.
func TestGRPCOverTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.HTTPSAddr = "127.0.0.1:0"
	cfg.GRPCTLS = true
	ts := startServer(t, cfg)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(dir, "tls", "cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("certificate: %v", err)
	}
	_, port, _ := net.SplitHostPort(ts.srv.Addrs().GRPC)
	call := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient("localhost:"+port, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := streamv1.NewStreamServiceClient(conn).Process(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&streamv1.StreamRequest{Pipeline: "nope"}); err != nil {
			_, err = stream.Recv()
			return err
		}
		_, err = stream.Recv()
		return err
	}
	// The server answers (NotFound: no such pipeline) over TLS.
	if err := call(credentials.NewTLS(&tls.Config{RootCAs: pool})); status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	if err := call(insecureCreds()); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext gRPC to a TLS listener: %v", err)
	}
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

// Issue 8 item 10: a long file name is cut to 200 bytes on a character
// boundary, never in the middle of a UTF-8 character.
func TestLongFileNameCutOnCharacter(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	name := "a" + strings.Repeat("é", 150) + ".jpeg" // 306 bytes: a cut at 200 from the end lands mid-character
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, _ := w.CreateFormFile("files", name)
	fw.Write([]byte("\x89PNG\r\n\x1a\nnot really"))
	w.WriteField("pipeline_json", `{"id":"p","steps":[{"id":"r","processor":"resize","params":{"width":32}}]}`)
	w.Close()
	st, body, _ := ts.send("POST", "/api/v1/executions", map[string]string{"Content-Type": w.FormDataContentType()}, buf.String())
	if st != 202 {
		t.Fatalf("upload: %d %s", st, body)
	}
	var created struct{ ID string }
	jsonInto(body, &created)
	st, body, _ = ts.do("GET", "/api/v1/executions/"+created.ID, "", nil)
	var e struct {
		Files []struct{ Name string } `json:"files"`
	}
	if err := jsonInto(body, &e); st != 200 || err != nil || len(e.Files) != 1 {
		t.Fatalf("execution: %d %v %s", st, err, body)
	}
	got := e.Files[0].Name
	if strings.ContainsRune(got, '\uFFFD') || !utf8.ValidString(got) || !strings.HasSuffix(name, got) || len(got) > 200 || len(got) < 198 {
		t.Fatalf("name %q (%d bytes) is not the tail of %q cut on a character", got, len(got), name)
	}
}

// Every $ref of the served OpenAPI document names a schema it defines
// (four operations referenced an undefined SDP).
func TestOpenAPIRefsResolve(t *testing.T) {
	ts := startServer(t, testConfig(t.TempDir()))
	st, body, _ := ts.do("GET", "/api/v1/openapi.json", "", nil)
	var doc struct {
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := jsonInto(body, &doc); st != 200 || err != nil {
		t.Fatalf("openapi: %d %v", st, err)
	}
	refs := regexp.MustCompile(`"#/components/schemas/([A-Za-z0-9_]+)"`).FindAllStringSubmatch(string(body), -1)
	if len(refs) < 30 {
		t.Fatalf("only %d refs", len(refs))
	}
	for _, m := range refs {
		if _, ok := doc.Components.Schemas[m[1]]; !ok {
			t.Errorf("$ref %s is not defined", m[1])
		}
	}
}

func TestSecurityConfigValidated(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.APIKeys = []APIKey{{Role: "root", SHA256: sha("x")}} }, "api_keys[0].role"},
		{func(c *Config) { c.APIKeys = []APIKey{{Role: "viewer", SHA256: "abc"}} }, "api_keys[0].sha256"},
		{func(c *Config) { c.CORSOrigins = []string{"example.com"} }, "cors_origins[0]"},
		{func(c *Config) { c.RateLimit = -1 }, "rate_limit"},
		{func(c *Config) { c.RateBurst = 0 }, "rate_burst"},
		{func(c *Config) { c.AuthFailuresPerMinute = -1 }, "auth_failures_per_minute"},
		{func(c *Config) { c.HTTPHeaderTimeout = 0 }, "http_header_timeout"},
		{func(c *Config) { c.GRPCTLS = true }, "grpc_tls"},
	} {
		cfg := Defaults()
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error naming %s, got %v", c.want, err)
		}
	}
	cfg := Defaults()
	env := map[string]string{"IFC_API_KEYS": "viewer:" + sha("a") + ",operator:" + sha("b"), "IFC_CORS_ORIGINS": "https://a.example", "IFC_RATE_LIMIT": "7.5"}
	if err := cfg.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if len(cfg.APIKeys) != 2 || cfg.APIKeys[1].Role != "operator" || cfg.RateLimit != 7.5 || cfg.CORSOrigins[0] != "https://a.example" {
		t.Fatalf("environment not applied: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
