// C side of package media: thin helpers over libavcodec, libavformat and
// libswscale that keep every per-frame step in one cgo call and every buffer
// (packets, frames, scaler) alive across calls.
#ifndef IFC_AV_H
#define IFC_AV_H

#include <stdint.h>
#include <stdlib.h>
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavformat/avformat.h>
#include <libavdevice/avdevice.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/log.h>
#include <libswscale/swscale.h>

void ifc_av_init(int log_level);
// ifc_av_load_devices loads libavdevice and registers its input formats
// (video4linux2, lavfi, ...); 0 on success.
int ifc_av_load_devices(void);

// ---- decoder ----
typedef struct ifc_dec {
	AVCodecContext *ctx;
	AVPacket *pkt;
	AVFrame *frame; // receive target
	AVFrame *last;  // latest good picture
	int has_last;
	struct SwsContext *sws;
	// Results of the last call, kept here so Go passes no pointers to its
	// own stack (which would make them escape and allocate per frame).
	int got, corrupt;
	int draining;
} ifc_dec;

int ifc_dec_open(ifc_dec **out, int codec_id, int threads);
struct ifc_dmx;
// ifc_dec_open_stream opens a decoder for the demuxer's video stream with its
// codec parameters (raw video needs its pixel format and size, some codecs
// their extradata).
int ifc_dec_open_stream(ifc_dec **out, struct ifc_dmx *m, int threads);
// ifc_dec_decode sends data (NULL drains the decoder and resets it for reuse)
// and receives every picture it yields: d->got counts good pictures,
// d->corrupt pictures dropped as damaged. Returns 0 or a negative AVERROR.
int ifc_dec_decode(ifc_dec *d, const uint8_t *data, int size, int64_t pts, int key);
// ifc_dec_send_packet is ifc_dec_decode for a packet that libav already owns
// (demuxer output), so it is not copied; pts replaces the packet's own.
int ifc_dec_send_packet(ifc_dec *d, AVPacket *pkt, int64_t pts);
// ifc_dec_drain_next takes the decoder's held pictures out one by one at the
// end of a stream: 1 with a picture in d->last, 0 when empty (the decoder is
// then reset for reuse), or a negative AVERROR.
int ifc_dec_drain_next(ifc_dec *d);
void ifc_dec_set_skip(ifc_dec *d, int discard);
void ifc_dec_set_skip_loop_filter(ifc_dec *d, int discard);
int ifc_dec_scale_bgr(ifc_dec *d, uint8_t *dst, int dst_stride, int dw, int dh);
void ifc_dec_close(ifc_dec *d);

// ---- encoder ----
typedef struct ifc_enc {
	AVCodecContext *ctx;
	AVFrame *frame; // YUV420P input picture, reused
	AVPacket *pkt;
	struct SwsContext *sws;
	int64_t out_pts; // of the last received packet
	int out_key;
} ifc_enc;

int ifc_enc_open(ifc_enc **out, int w, int h, int fps, int bitrate, int gop, const char *preset, int threads);
// Convert and send one picture; force_key asks for an IDR.
int ifc_enc_send_bgr(ifc_enc *e, const uint8_t *bgr, int stride, int sw, int sh, int64_t pts, int force_key);
int ifc_enc_send_yuv(ifc_enc *e, const uint8_t *y, const uint8_t *u, const uint8_t *v, int ys, int us, int vs, int sw, int sh, int64_t pts, int force_key);
int ifc_enc_send_frame(ifc_enc *e, const AVFrame *src, int64_t pts, int force_key);
int ifc_enc_flush(ifc_enc *e);
// Returns 1 with a packet (valid until the next call), 0 when none is ready,
// negative AVERROR on failure.
int ifc_enc_receive(ifc_enc *e);
void ifc_enc_close(ifc_enc *e);

// ---- demuxer ----
typedef struct ifc_dmx {
	AVFormatContext *fmt;
	int stream;
	AVPacket *pkt;
	AVPacket *out;
	AVBSFContext *bsf;
	volatile int interrupt;
	// Times of m->out in nanoseconds (INT64_MIN when missing).
	int64_t pts_ns, dts_ns, dur_ns;
	int key;
} ifc_dmx;

typedef struct ifc_dmx_info {
	int codec_id;
	int width, height;
	int fps_num, fps_den;
	int tb_num, tb_den;
	int64_t start_ns;
	int64_t duration_ns;
	const char *codec_name;
} ifc_dmx_info;

// ifc_dmx_alloc prepares a demuxer whose open can already be interrupted;
// ifc_dmx_open opens it. After a failed open the caller still closes m.
int ifc_dmx_alloc(ifc_dmx **out);
int ifc_dmx_open(ifc_dmx *m, const char *url, const char *format, const char *opts);
void ifc_dmx_info_get(ifc_dmx *m, ifc_dmx_info *info);
// Reads the next video packet into m->out (Annex-B for H264/H265). Returns 0,
// AVERROR_EOF at the end, or another negative AVERROR.
int ifc_dmx_read(ifc_dmx *m);
int ifc_dmx_seek_start(ifc_dmx *m);
void ifc_dmx_interrupt(ifc_dmx *m);
void ifc_dmx_close(ifc_dmx *m);

#endif
