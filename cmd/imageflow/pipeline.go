package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

func init() { commands["pipeline"] = pipelineCommand }

const pipelineUsage = `imageflow pipeline — work with pipelines on a server

Usage:
  imageflow pipeline try --pipeline NAME [--out DIR] IMAGE       run a stored pipeline once on a picture
  imageflow pipeline try --pipeline-json FILE [--out DIR] IMAGE  same with a pipeline that is not stored

try prints every step's time and detections; with --out it writes each step's
output picture (boxes drawn) as DIR/<step>.jpg. Nothing is stored on the server.
Every command takes --server URL (env IFC_SERVER, default http://127.0.0.1:8080)
and --token T (env IFC_TOKEN).
`

func pipelineCommand(ctx context.Context, args []string) error {
	return runPipeline(ctx, args, os.Stdout, os.Stderr)
}

// runPipeline is the pipeline command with its output streams, for tests.
func runPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, pipelineUsage)
		if len(args) == 0 {
			return errors.New("pipeline: missing subcommand")
		}
		return nil
	}
	if args[0] == "try" {
		return pipelineTry(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, pipelineUsage)
	return fmt.Errorf("pipeline: unknown subcommand %q", args[0])
}

// tryAnswer is the part of POST /api/v1/pipelines/try's answer the CLI shows.
type tryAnswer struct {
	Pipeline string  `json:"pipeline"`
	Width    int     `json:"width"`
	Height   int     `json:"height"`
	MS       float64 `json:"ms"`
	Steps    []struct {
		ID         string            `json:"id"`
		Processor  string            `json:"processor"`
		MS         float64           `json:"ms"`
		Image      string            `json:"image"`
		Error      string            `json:"error"`
		Values     map[string]string `json:"values"`
		Detections []struct {
			Label      string  `json:"label"`
			Score      float64 `json:"score"`
			X, Y, W, H float64
		} `json:"detections"`
	} `json:"steps"`
}

func pipelineTry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pipeline try", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server, token := clientFlags(fs)
	stored := fs.String("pipeline", "", "id of a stored pipeline")
	inline := fs.String("pipeline-json", "", "file holding a pipeline as JSON")
	out := fs.String("out", "", "directory for each step's output picture")
	if err := fs.Parse(interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("pipeline try: want exactly one image file")
	}
	if (*stored == "") == (*inline == "") {
		return errors.New("pipeline try: give --pipeline or --pipeline-json")
	}
	c, err := newAPIClient(*server, *token)
	if err != nil {
		return err
	}
	img, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if *stored != "" {
		_ = mw.WriteField("pipeline_id", *stored)
	} else {
		spec, err := os.ReadFile(*inline)
		if err != nil {
			return err
		}
		_ = mw.WriteField("pipeline", string(spec))
	}
	fw, err := mw.CreateFormFile("image", filepath.Base(fs.Arg(0)))
	if err != nil {
		return err
	}
	_, _ = fw.Write(img)
	if err := mw.Close(); err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/pipelines/try", &body, mw.FormDataContentType())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var ans tryAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return fmt.Errorf("unexpected answer: %v", err)
	}
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "pipeline %s on %s (%dx%d): %.1f ms\n", ans.Pipeline, filepath.Base(fs.Arg(0)), ans.Width, ans.Height, ans.MS)
	var failed []string
	for _, s := range ans.Steps {
		line := fmt.Sprintf("  %-20s %-12s %8.2f ms  %d detections", s.ID, s.Processor, s.MS, len(s.Detections))
		if s.Error != "" {
			line += "  ERROR " + s.Error
			failed = append(failed, s.ID)
		}
		if *out != "" && s.Image != "" {
			pic, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s.Image, "data:image/jpeg;base64,"))
			if err != nil {
				return fmt.Errorf("step %s picture: %v", s.ID, err)
			}
			name := filepath.Join(*out, safeName(s.ID)+".jpg")
			if err := os.WriteFile(name, pic, 0o644); err != nil {
				return err
			}
			line += "  " + name
		}
		fmt.Fprintln(stdout, line)
		for _, d := range s.Detections {
			fmt.Fprintf(stdout, "      %s %.2f at %.0f,%.0f %.0fx%.0f\n", d.Label, d.Score, d.X, d.Y, d.W, d.H)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("pipeline try: steps failed: %s", strings.Join(failed, ", "))
	}
	return nil
}
