package bus

import (
	"sync"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// marshalBufs recycles marshal buffers: nats copies a payload into its write
// buffer inside Publish, so the buffer is free again as soon as Publish returns.
var marshalBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Publish marshals m and publishes it on subject without keeping an
// allocation per message.
func Publish(nc *nats.Conn, subject string, m proto.Message) error {
	bp := marshalBufs.Get().(*[]byte)
	buf, err := proto.MarshalOptions{}.MarshalAppend((*bp)[:0], m)
	if err == nil {
		err = nc.Publish(subject, buf)
	}
	if cap(buf) <= 8<<20 {
		*bp = buf[:0]
		marshalBufs.Put(bp)
	}
	return err
}
