package batch

import (
	"reflect"

	"github.com/imageflowcanvas/imageflow/server/rest"
)

var (
	obj = rest.Obj
	ref = rest.Ref
)

var (
	tString  = rest.String
	tInt     = rest.Integer
	tNumber  = rest.Number
	tTime    = rest.Time
	tState   = map[string]any{"type": "string", "enum": []string{StateQueued, StateRunning, StateDone, StateFailed, StateCancelled}}
	tFState  = map[string]any{"type": "string", "enum": []string{FilePending, FileRunning, FileDone, FileFailed, FileCancelled}}
	tStrMap  = map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}}
	tTimings = map[string]any{"type": "array", "nullable": true, "items": obj(map[string]any{"id": tString, "processor": tString, "duration_ms": tNumber, "error": tString}, "id", "processor", "duration_ms")}
)

// Schemas are the OpenAPI component schemas the batch routes reference.
func (m *Manager) Schemas() map[string]any {
	summaryProps := map[string]any{
		"id": tString, "pipeline": tString, "state": tState, "total": tInt, "done": tInt, "failed": tInt,
		"cancelled": tInt, "percent": tNumber, "created_at": tTime, "updated_at": tTime, "finished_at": tTime,
	}
	summaryRequired := []string{"id", "pipeline", "state", "total", "done", "failed", "cancelled", "percent", "created_at", "updated_at"}
	execProps := map[string]any{"files": map[string]any{"type": "array", "items": ref("ExecutionFile")},
		"pipeline_spec": map[string]any{"type": "object", "additionalProperties": true, "description": "The pipeline as it was when the execution started"}}
	for k, v := range summaryProps {
		execProps[k] = v
	}
	return map[string]any{
		"Upload": obj(map[string]any{
			"files":         map[string]any{"type": "array", "items": map[string]any{"type": "string", "format": "binary"}, "description": "One or more images (JPEG, PNG, ...)"},
			"pipeline":      map[string]any{"type": "string", "description": "Id of a stored pipeline"},
			"pipeline_json": map[string]any{"type": "string", "description": "An inline pipeline, the JSON of POST /api/v1/pipelines"},
		}, "files"),
		"ExecutionCreated": obj(map[string]any{"id": tString, "state": tState, "pipeline": tString, "total": tInt,
			"status": tString, "events": tString, "ws": tString, "results": tString}, "id", "state", "pipeline", "total", "status", "events", "ws", "results"),
		"ExecutionSummary": obj(summaryProps, summaryRequired...),
		"ExecutionList": obj(map[string]any{"executions": map[string]any{"type": "array", "items": ref("ExecutionSummary")},
			"next_cursor": tString, "total": tInt}, "executions", "total"),
		"Execution": obj(execProps, append(summaryRequired, "files", "pipeline_spec")...),
		"ExecutionFile": obj(map[string]any{"index": tInt, "name": tString, "size": tInt, "content_type": tString,
			"state": tFState, "error": tString, "attempts": tInt, "duration_ms": tNumber, "steps": tTimings,
			"restarts":   map[string]any{"type": "integer", "description": "How often the file was taken up again after a process that had it died"},
			"detections": tInt, "output": tString, "finished_at": tTime}, "index", "name", "size", "content_type", "state"),
		"FileResult": obj(map[string]any{"execution": tString, "index": tInt, "file": tString, "pipeline": tString,
			"width": tInt, "height": tInt, "detections": map[string]any{"type": "array", "items": ref("BatchDetection")},
			"values": tStrMap, "steps": tTimings, "duration_ms": tNumber, "attempt": tInt, "image": tString},
			"execution", "index", "file", "pipeline", "width", "height", "detections", "values", "steps", "duration_ms", "attempt"),
		"BatchDetection": obj(map[string]any{"x": tNumber, "y": tNumber, "w": tNumber, "h": tNumber, "label": tString,
			"score": tNumber, "class_id": tInt, "track_id": tInt}, "x", "y", "w", "h", "label", "score"),
		"ExecutionProgress": obj(map[string]any{"execution": tString, "state": tState, "index": tInt,
			"file_state": map[string]any{"type": "string", "description": "FILE_STATE_*; FILE_STATE_UNSPECIFIED marks a message about the whole execution"},
			"error":      tString, "done": tInt, "failed": tInt, "total": tInt, "percent": tNumber,
			"unix_nano": tString, "duration_ns": tString},
			// protojson with EmitUnpopulated: every field is always sent.
			"execution", "state", "index", "file_state", "error", "done", "failed", "total", "percent", "unix_nano", "duration_ns"),
	}
}

// SchemaTypes are the Go types the handlers encode for each schema of
// Schemas, so a test can check the two agree (rest.SchemaDrift).
func SchemaTypes() map[string]reflect.Type {
	return map[string]reflect.Type{
		"ExecutionCreated": reflect.TypeFor[created](),
		"ExecutionSummary": reflect.TypeFor[Summary](),
		"ExecutionList":    reflect.TypeFor[listBody](),
		"Execution":        reflect.TypeFor[Execution](),
		"ExecutionFile":    reflect.TypeFor[File](),
		"FileResult":       reflect.TypeFor[fileResult](),
		"BatchDetection":   reflect.TypeFor[detection](),
	}
}
