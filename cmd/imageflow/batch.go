package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/batch"
)

func init() { commands["batch"] = batchCommand }

const batchUsage = `imageflow batch — run images through a pipeline on a server

Usage:
  imageflow batch run --pipeline NAME [--out DIR] FILES...   upload, follow progress, download results
  imageflow batch run --pipeline-json FILE [--out DIR] FILES...  same with an inline pipeline
  imageflow batch status ID                                  one execution with its files
  imageflow batch ls [--state STATE] [--limit N]             executions, newest first
  imageflow batch cancel ID                                  stop an execution

Every command takes --server URL (env IFC_SERVER, default http://127.0.0.1:8080)
and --token T (env IFC_TOKEN).
`

func batchCommand(ctx context.Context, args []string) error {
	return runBatch(ctx, args, os.Stdout, os.Stderr)
}

// runBatch is the batch command with its output streams, for tests.
func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, batchUsage)
		if len(args) == 0 {
			return errors.New("batch: missing subcommand")
		}
		return nil
	}
	switch args[0] {
	case "run":
		return batchRun(ctx, args[1:], stdout, stderr)
	case "status":
		return batchStatus(ctx, args[1:], stdout, stderr)
	case "ls", "list":
		return batchList(ctx, args[1:], stdout, stderr)
	case "cancel":
		return batchCancel(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, batchUsage)
	return fmt.Errorf("batch: unknown subcommand %q", args[0])
}

// apiClient talks to the REST API of a server.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func clientFlags(fs *flag.FlagSet) (*string, *string) {
	def := os.Getenv("IFC_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	server := fs.String("server", def, "server URL (env IFC_SERVER)")
	token := fs.String("token", os.Getenv("IFC_TOKEN"), "API token (env IFC_TOKEN)")
	return server, token
}

func newAPIClient(server, token string) (*apiClient, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want http://host:port or https://host:port", server)
	}
	return &apiClient{base: strings.TrimRight(server, "/"), token: token, http: &http.Client{}}, nil
}

// apiError is the server's JSON error shape.
type apiError struct {
	Error struct {
		Status  int    `json:"status"`
		Code    string `json:"code"`
		Message string `json:"message"`
		Step    string `json:"step"`
	} `json:"error"`
}

// maxRateWaits bounds how often a request without a body is sent again
// after the server's rate limit refused it (429).
const maxRateWaits = 20

func (c *apiClient) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	for waits := 0; ; waits++ {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
		if err != nil {
			return nil, err
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		// Downloading a large batch's results goes past the server's
		// per-client request rate: wait as told and ask again. A request
		// with a body (an upload) cannot be sent twice from its reader.
		if resp.StatusCode == http.StatusTooManyRequests && body == nil && waits < maxRateWaits {
			resp.Body.Close()
			if err := sleepCtx(ctx, retryAfterDelay(resp.Header.Get("Retry-After"), waits)); err != nil {
				return nil, err
			}
			continue
		}
		return c.checked(resp, method, path)
	}
}

// retryAfterDelay is the server's Retry-After in seconds, or a backoff
// growing from 100 ms to 2 s when it sent none.
func retryAfterDelay(header string, waits int) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(header)); err == nil && n >= 0 && n <= 60 {
		return max(time.Duration(n)*time.Second, 50*time.Millisecond)
	}
	return min(100*time.Millisecond<<min(waits, 5), 2*time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// checked turns an error response into an error carrying the server's message.
func (c *apiClient) checked(resp *http.Response, method, path string) (*http.Response, error) {
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var ae apiError
		if json.Unmarshal(b, &ae) == nil && ae.Error.Message != "" {
			msg := ae.Error.Message
			if ae.Error.Step != "" && !strings.Contains(msg, ae.Error.Step) {
				msg += " (step " + ae.Error.Step + ")"
			}
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, msg)
		}
		return nil, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

func (c *apiClient) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// batchExecution is the server's execution record, as the API returns it.
type batchExecution = batch.Execution

func finishedState(s string) bool {
	return s == batch.StateDone || s == batch.StateFailed || s == batch.StateCancelled
}

func batchRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batch run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server, token := clientFlags(fs)
	pipeline := fs.String("pipeline", "", "id of a stored pipeline")
	pipelineJSON := fs.String("pipeline-json", "", "file with an inline pipeline (JSON of POST /api/v1/pipelines)")
	out := fs.String("out", "", "directory for output images and result JSON (default: do not download)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return err
	}
	files := fs.Args()
	if len(files) == 0 {
		return errors.New("batch run: no files given")
	}
	if (*pipeline == "") == (*pipelineJSON == "") {
		return errors.New("batch run: give exactly one of --pipeline or --pipeline-json")
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("batch run: %w", err)
		}
		if st.IsDir() {
			return fmt.Errorf("batch run: %s is a directory", f)
		}
	}
	fields := map[string]string{"pipeline": *pipeline}
	if *pipelineJSON != "" {
		b, err := os.ReadFile(*pipelineJSON)
		if err != nil {
			return fmt.Errorf("batch run: --pipeline-json: %w", err)
		}
		fields = map[string]string{"pipeline_json": string(b)}
	}
	c, err := newAPIClient(*server, *token)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fmt.Errorf("batch run: --out: %w", err)
		}
	}
	id, err := c.upload(ctx, fields, files)
	if err != nil {
		return fmt.Errorf("batch run: upload: %w", err)
	}
	fmt.Fprintf(stderr, "execution %s: %d files\n", id, len(files))
	bar := newProgressBar(stderr, *quiet)
	if err := c.follow(ctx, id, bar.update); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; the execution goes on: imageflow batch status %s", id)
		}
		fmt.Fprintf(stderr, "\nprogress stream: %v; polling\n", err)
		if err := c.poll(ctx, id, bar.update); err != nil {
			return err
		}
	}
	bar.finish()
	var x batchExecution
	if err := c.getJSON(ctx, "/api/v1/executions/"+id, &x); err != nil {
		return err
	}
	if *out != "" {
		if err := c.download(ctx, &x, *out); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s %s: %d done, %d failed, %d cancelled of %d\n", x.ID, x.State, x.Done, x.Failed, x.Cancelled, x.Total)
	for _, f := range x.Files {
		if f.State == "failed" {
			fmt.Fprintf(stdout, "  #%d %s: %s\n", f.Index, f.Name, f.Error)
		}
	}
	if *out != "" {
		fmt.Fprintf(stdout, "results in %s\n", *out)
	}
	if x.Failed > 0 || x.State != "done" {
		return fmt.Errorf("execution %s %s with %d failed files", x.ID, x.State, x.Failed)
	}
	return nil
}

// interleave lets flags follow the file list (imageflow batch run a.jpg
// --pipeline p), as users type them.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") {
				if f := fs.Lookup(name); f != nil {
					if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
						if i+1 < len(args) {
							flags = append(flags, args[i+1])
							i++
						}
					}
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(append(flags, "--"), pos...)
}

// upload streams the files as multipart without holding them in memory.
func (c *apiClient) upload(ctx context.Context, fields map[string]string, files []string) (string, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			for k, v := range fields {
				if v != "" {
					if err := mw.WriteField(k, v); err != nil {
						return err
					}
				}
			}
			for _, name := range files {
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				w, err := mw.CreateFormFile("files", filepath.Base(name))
				if err == nil {
					_, err = io.Copy(w, f)
				}
				f.Close()
				if err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/executions", pr, mw.FormDataContentType())
	pr.Close()
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var created struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&created); err != nil || created.ID == "" {
		return "", fmt.Errorf("unexpected answer (%v)", err)
	}
	return created.ID, nil
}

// progressJSON reads the server's progress events (busv1.Progress in
// protojson, proto field names); fields a newer server adds are skipped.
var progressJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// follow reads the execution's Server-Sent Events until it ends.
func (c *apiClient) follow(ctx context.Context, id string, update func(*busv1.Progress)) error {
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/executions/"+id+"/events", nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	event, last := "", ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if event == "end" {
				if !finishedState(last) {
					return errors.New("stream ended before the execution finished")
				}
				return nil
			}
			p := &busv1.Progress{}
			if err := progressJSON.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), p); err == nil {
				last = p.State
				update(p)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("stream closed before the execution finished")
}

// poll is the fallback when the event stream breaks (a server restart).
func (c *apiClient) poll(ctx context.Context, id string, update func(*busv1.Progress)) error {
	for {
		var x batchExecution
		err := c.getJSON(ctx, "/api/v1/executions/"+id, &x)
		if err == nil {
			update(&busv1.Progress{State: x.State, Done: uint32(x.Done), Failed: uint32(x.Failed), Total: uint32(x.Total), Percent: x.Percent})
			if finishedState(x.State) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// download saves each finished file's output image and result JSON as
// DIR/NNNN_<name>(.json).
func (c *apiClient) download(ctx context.Context, x *batchExecution, dir string) error {
	for _, f := range x.Files {
		if f.State != "done" {
			continue
		}
		base := fmt.Sprintf("%04d_%s", f.Index, safeName(f.Name))
		stem := strings.TrimSuffix(base, filepath.Ext(base))
		prefix := "/api/v1/executions/" + x.ID + "/files/" + strconv.Itoa(f.Index)
		if err := c.save(ctx, prefix, filepath.Join(dir, stem+".json")); err != nil {
			return err
		}
		if f.Output != "" {
			ext := ".jpg"
			if f.Output == "image/png" {
				ext = ".png"
			}
			if err := c.save(ctx, prefix+"/image", filepath.Join(dir, stem+ext)); err != nil {
				return err
			}
		}
	}
	return nil
}

func safeName(s string) string {
	s = filepath.Base(strings.ReplaceAll(s, "\\", "/"))
	if s == "." || s == "/" || s == ".." || s == "" {
		return "file"
	}
	return s
}

func (c *apiClient) save(ctx context.Context, path, file string) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	tmp := file + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("download %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// progressBar draws one line on a terminal, or a line per 10 % otherwise.
type progressBar struct {
	w        io.Writer
	quiet    bool
	tty      bool
	lastStep int
	drawn    bool
}

func newProgressBar(w io.Writer, quiet bool) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, quiet: quiet, tty: tty, lastStep: -1}
}

func (b *progressBar) update(p *busv1.Progress) {
	if b.quiet || p.Total == 0 {
		return
	}
	if p.FileState == busv1.FileState_FILE_STATE_FAILED && p.Error != "" {
		b.line()
		fmt.Fprintf(b.w, "file #%d failed: %s\n", p.Index, p.Error)
	}
	const width = 30
	filled := int(p.Percent / 100 * width)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	text := fmt.Sprintf("[%s] %5.1f%% %d/%d done, %d failed, %s", bar, p.Percent, p.Done, p.Total, p.Failed, p.State)
	if b.tty {
		fmt.Fprintf(b.w, "\r%s", text)
		b.drawn = true
		return
	}
	if step := int(p.Percent / 10); step != b.lastStep {
		b.lastStep = step
		fmt.Fprintln(b.w, text)
	}
}

func (b *progressBar) line() {
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

func (b *progressBar) finish() { b.line() }

func batchStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batch status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server, token := clientFlags(fs)
	asJSON := fs.Bool("json", false, "print the execution as JSON")
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("batch status: want one execution id")
	}
	c, err := newAPIClient(*server, *token)
	if err != nil {
		return err
	}
	id := fs.Arg(0)
	if *asJSON {
		resp, err := c.do(ctx, http.MethodGet, "/api/v1/executions/"+url.PathEscape(id), nil, "")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(stdout, resp.Body)
		return err
	}
	var x batchExecution
	if err := c.getJSON(ctx, "/api/v1/executions/"+url.PathEscape(id), &x); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "execution %s\npipeline  %s\nstate     %s (%.0f%%)\nfiles     %d done, %d failed, %d cancelled of %d\ncreated   %s\n",
		x.ID, x.Pipeline, x.State, x.Percent, x.Done, x.Failed, x.Cancelled, x.Total, x.CreatedAt.Local().Format(time.DateTime))
	if x.FinishedAt != nil {
		fmt.Fprintf(stdout, "took      %s\n", x.FinishedAt.Sub(x.CreatedAt).Round(time.Millisecond))
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "%5s  %-9s  %9s  %4s  %s\n", "INDEX", "STATE", "MS", "DETS", "FILE")
	for _, f := range x.Files {
		line := fmt.Sprintf("%5d  %-9s  %9.1f  %4d  %s", f.Index, f.State, f.DurationMS, f.Detections, f.Name)
		if f.Error != "" {
			line += "  (" + f.Error + ")"
		}
		fmt.Fprintln(stdout, line)
	}
	return nil
}

func batchList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batch ls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server, token := clientFlags(fs)
	state := fs.String("state", "", "only executions in this state (queued, running, done, failed, cancelled)")
	limit := fs.Int("limit", 20, "at most this many")
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return err
	}
	c, err := newAPIClient(*server, *token)
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *state != "" {
		q.Set("state", *state)
	}
	var l struct {
		Executions []batchExecution `json:"executions"`
		Total      int              `json:"total"`
	}
	if err := c.getJSON(ctx, "/api/v1/executions?"+q.Encode(), &l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-24s  %-9s  %6s  %5s  %6s  %-19s  %s\n", "ID", "STATE", "%", "FILES", "FAILED", "CREATED", "PIPELINE")
	for _, x := range l.Executions {
		fmt.Fprintf(stdout, "%-24s  %-9s  %6.1f  %5d  %6d  %-19s  %s\n", x.ID, x.State, x.Percent, x.Total, x.Failed, x.CreatedAt.Local().Format(time.DateTime), x.Pipeline)
	}
	if l.Total > len(l.Executions) {
		fmt.Fprintf(stdout, "(%d of %d shown; --limit for more)\n", len(l.Executions), l.Total)
	}
	return nil
}

func batchCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batch cancel", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server, token := clientFlags(fs)
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("batch cancel: want one execution id")
	}
	c, err := newAPIClient(*server, *token)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodDelete, "/api/v1/executions/"+url.PathEscape(fs.Arg(0)), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var x batchExecution
	if err := json.NewDecoder(resp.Body).Decode(&x); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: %d done, %d cancelled of %d\n", x.ID, x.State, x.Done, x.Cancelled, x.Total)
	return nil
}
