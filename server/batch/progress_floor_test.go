package batch

import (
	"testing"

	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
)

// The order ci printed: a worker's start of file 2, published with the
// counters it read before file 0 finished elsewhere, arrived after that
// finish. A client must not see the counters or the state go back.
func TestProgressFloorNeverGoesBack(t *testing.T) {
	in := []*busv1.Progress{
		{State: StateQueued, Index: 0, FileState: busv1.FileState_FILE_STATE_RUNNING},
		{State: StateRunning, Index: 1, FileState: busv1.FileState_FILE_STATE_DONE, Done: 1, Percent: 20},
		{State: StateRunning, Index: 0, FileState: busv1.FileState_FILE_STATE_DONE, Done: 2, Percent: 40},
		{State: StateRunning, Index: 2, FileState: busv1.FileState_FILE_STATE_RUNNING, Done: 1, Percent: 20},
		{State: StateQueued, Index: 3, FileState: busv1.FileState_FILE_STATE_RUNNING, Done: 0, Failed: 0},
		{State: StateRunning, Index: 3, FileState: busv1.FileState_FILE_STATE_FAILED, Done: 2, Failed: 1, Percent: 60},
		{State: StateRunning, Index: 4, FileState: busv1.FileState_FILE_STATE_RUNNING, Done: 2, Percent: 40},
		{State: StateDone, Done: 4, Failed: 1, Percent: 100},
	}
	var floor progressFloor
	prev := busv1.Progress{State: StateQueued}
	for i, p := range in {
		idx, fs := p.Index, p.FileState
		floor.raise(p)
		if p.Done < prev.Done || p.Failed < prev.Failed || p.Percent < prev.Percent || stateRank(p.State) < stateRank(prev.State) {
			t.Fatalf("message %d went back: %+v after %+v", i, p, &prev)
		}
		if p.Index != idx || p.FileState != fs {
			t.Fatalf("message %d: the file it is about changed: %+v", i, p)
		}
		prev.Done, prev.Failed, prev.Percent, prev.State = p.Done, p.Failed, p.Percent, p.State
	}
	if in[3].Done != 2 || in[3].Percent != 40 || in[4].State != StateRunning || in[6].Failed != 1 || in[6].Percent != 60 {
		t.Fatalf("stale messages not raised: %+v %+v %+v", in[3], in[4], in[6])
	}
	if last := in[len(in)-1]; last.State != StateDone || last.Done != 4 || last.Percent != 100 {
		t.Fatalf("final message changed: %+v", last)
	}
}
