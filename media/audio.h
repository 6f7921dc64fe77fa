// C side of media's audio transcoder: any libavcodec audio decoder into
// 48 kHz Opus (libopus), through libswresample and a sample FIFO that cuts
// the encoder's fixed-size frames. Every buffer lives across calls.
#ifndef IFC_AUDIO_H
#define IFC_AUDIO_H

#include <stdint.h>
#include <libavcodec/avcodec.h>
#include <libavutil/audio_fifo.h>
#include <libswresample/swresample.h>

typedef struct ifc_atx {
	AVCodecContext *dec, *enc;
	AVPacket *in, *out;
	AVFrame *frame;  // decoder output
	AVFrame *eframe; // encoder input, enc->frame_size samples
	SwrContext *swr;
	int swr_rate, swr_fmt, swr_channels; // input the resampler was set up for
	AVAudioFifo *fifo;
	uint8_t **conv;   // resampler output, conv_cap samples per channel
	int conv_cap;
	int64_t fifo_pts; // 48 kHz time of the FIFO's first sample
	int64_t next_pts; // 48 kHz time the next input frame should start at
	int started;
} ifc_atx;

// ifc_atx_open opens a transcoder from codec_id (sample rate, channels and
// optional extradata, e.g. an AAC AudioSpecificConfig) to Opus at bitrate.
int ifc_atx_open(ifc_atx **out, int codec_id, int rate, int channels, const uint8_t *extra, int extra_size, int bitrate);
// ifc_atx_send decodes one frame whose first sample is at pts48 (48 kHz),
// resamples it and queues its samples; a jump in pts48 restarts the output
// timeline there. Returns 0 or a negative AVERROR.
int ifc_atx_send(ifc_atx *t, const uint8_t *data, int size, int64_t pts48);
// ifc_atx_receive returns 1 with an Opus packet in t->out (valid until the
// next call), 0 when none is ready, or a negative AVERROR.
int ifc_atx_receive(ifc_atx *t);
void ifc_atx_close(ifc_atx *t);

#endif
