#include "audio.h"

#include <string.h>

#include <libavutil/opt.h>
#include <libavutil/samplefmt.h>

#define ATX_RATE 48000

void ifc_atx_close(ifc_atx *t) {
	if (!t) return;
	avcodec_free_context(&t->dec);
	avcodec_free_context(&t->enc);
	av_packet_free(&t->in);
	av_packet_free(&t->out);
	av_frame_free(&t->frame);
	av_frame_free(&t->eframe);
	swr_free(&t->swr);
	if (t->fifo) av_audio_fifo_free(t->fifo);
	if (t->conv) {
		av_freep(&t->conv[0]);
		av_freep(&t->conv);
	}
	av_free(t);
}

int ifc_atx_open(ifc_atx **out, int codec_id, int rate, int channels, const uint8_t *extra, int extra_size, int bitrate) {
	*out = NULL;
	if (rate <= 0 || rate > 192000 || channels <= 0 || channels > 8 || extra_size < 0 || extra_size > 1024)
		return AVERROR(EINVAL);
	const AVCodec *dc = avcodec_find_decoder((enum AVCodecID)codec_id);
	if (!dc || dc->type != AVMEDIA_TYPE_AUDIO) return AVERROR_DECODER_NOT_FOUND;
	const AVCodec *ec = avcodec_find_encoder_by_name("libopus");
	if (!ec) return AVERROR_ENCODER_NOT_FOUND;
	ifc_atx *t = av_mallocz(sizeof(*t));
	if (!t) return AVERROR(ENOMEM);
	t->dec = avcodec_alloc_context3(dc);
	t->enc = avcodec_alloc_context3(ec);
	t->in = av_packet_alloc();
	t->out = av_packet_alloc();
	t->frame = av_frame_alloc();
	t->eframe = av_frame_alloc();
	if (!t->dec || !t->enc || !t->in || !t->out || !t->frame || !t->eframe) {
		ifc_atx_close(t);
		return AVERROR(ENOMEM);
	}
	t->dec->sample_rate = rate;
	av_channel_layout_default(&t->dec->ch_layout, channels);
	if (extra_size > 0) {
		t->dec->extradata = av_mallocz(extra_size + AV_INPUT_BUFFER_PADDING_SIZE);
		if (!t->dec->extradata) {
			ifc_atx_close(t);
			return AVERROR(ENOMEM);
		}
		memcpy(t->dec->extradata, extra, extra_size);
		t->dec->extradata_size = extra_size;
	}
	int r = avcodec_open2(t->dec, dc, NULL);
	if (r < 0) {
		ifc_atx_close(t);
		return r;
	}
	// Opus in WebRTC: 48 kHz, mono or stereo (more is downmixed), 20 ms.
	AVCodecContext *e = t->enc;
	e->sample_rate = ATX_RATE;
	av_channel_layout_default(&e->ch_layout, channels > 1 ? 2 : 1);
	e->sample_fmt = AV_SAMPLE_FMT_FLT;
	e->bit_rate = bitrate > 0 ? bitrate : 64000;
	e->time_base = (AVRational){1, ATX_RATE};
	av_opt_set(e->priv_data, "application", "audio", 0);
	r = avcodec_open2(e, ec, NULL);
	if (r < 0) {
		ifc_atx_close(t);
		return r;
	}
	t->fifo = av_audio_fifo_alloc(e->sample_fmt, e->ch_layout.nb_channels, e->frame_size * 4);
	t->eframe->format = e->sample_fmt;
	t->eframe->nb_samples = e->frame_size;
	t->eframe->sample_rate = ATX_RATE;
	r = av_channel_layout_copy(&t->eframe->ch_layout, &e->ch_layout);
	if (r >= 0) r = av_frame_get_buffer(t->eframe, 0);
	if (!t->fifo || r < 0) {
		ifc_atx_close(t);
		return r < 0 ? r : AVERROR(ENOMEM);
	}
	*out = t;
	return 0;
}

// setup_swr (re)builds the resampler when the decoder's output changes.
static int setup_swr(ifc_atx *t, AVFrame *f) {
	if (t->swr && t->swr_rate == f->sample_rate && t->swr_fmt == f->format &&
	    t->swr_channels == f->ch_layout.nb_channels)
		return 0;
	swr_free(&t->swr);
	int r = swr_alloc_set_opts2(&t->swr, &t->enc->ch_layout, t->enc->sample_fmt, ATX_RATE, &f->ch_layout,
	                            (enum AVSampleFormat)f->format, f->sample_rate, 0, NULL);
	if (r < 0) return r;
	r = swr_init(t->swr);
	if (r < 0) {
		swr_free(&t->swr);
		return r;
	}
	t->swr_rate = f->sample_rate;
	t->swr_fmt = f->format;
	t->swr_channels = f->ch_layout.nb_channels;
	return 0;
}

static int queue_frame(ifc_atx *t, AVFrame *f) {
	if (f->sample_rate <= 0 || f->nb_samples <= 0) return 0;
	int r = setup_swr(t, f);
	if (r < 0) return r;
	int want = swr_get_out_samples(t->swr, f->nb_samples);
	if (want < 0) return want;
	if (want > t->conv_cap) {
		if (t->conv) {
			av_freep(&t->conv[0]);
			av_freep(&t->conv);
		}
		t->conv_cap = 0;
		r = av_samples_alloc_array_and_samples(&t->conv, NULL, t->enc->ch_layout.nb_channels, want,
		                                       t->enc->sample_fmt, 0);
		if (r < 0) return r;
		t->conv_cap = want;
	}
	int n = swr_convert(t->swr, t->conv, t->conv_cap, (const uint8_t **)f->extended_data, f->nb_samples);
	if (n < 0) return n;
	if (n == 0) return 0;
	// Keep at most a second queued: a stalled encoder never grows memory.
	if (av_audio_fifo_size(t->fifo) > ATX_RATE) {
		int drop = av_audio_fifo_size(t->fifo);
		av_audio_fifo_drain(t->fifo, drop);
		t->fifo_pts += drop;
	}
	if (av_audio_fifo_write(t->fifo, (void **)t->conv, n) < n) return AVERROR(ENOMEM);
	return 0;
}

int ifc_atx_send(ifc_atx *t, const uint8_t *data, int size, int64_t pts48) {
	if (!data || size <= 0) return AVERROR(EINVAL);
	// A jump of more than 100 ms against the expected time (lost frames, a
	// restarted camera) restarts the timeline at the frame's own time.
	if (!t->started || pts48 - t->next_pts > ATX_RATE / 10 || t->next_pts - pts48 > ATX_RATE / 10) {
		av_audio_fifo_reset(t->fifo);
		t->fifo_pts = pts48;
		t->started = 1;
	}
	int r = av_new_packet(t->in, size);
	if (r < 0) return r;
	memcpy(t->in->data, data, size);
	r = avcodec_send_packet(t->dec, t->in);
	av_packet_unref(t->in);
	if (r < 0 && r != AVERROR(EAGAIN)) return r;
	int64_t queued = 0;
	for (;;) {
		int q = avcodec_receive_frame(t->dec, t->frame);
		if (q == AVERROR(EAGAIN) || q == AVERROR_EOF) break;
		if (q < 0) return q;
		if (t->frame->sample_rate > 0) queued += (int64_t)t->frame->nb_samples * ATX_RATE / t->frame->sample_rate;
		q = queue_frame(t, t->frame);
		av_frame_unref(t->frame);
		if (q < 0) return q;
	}
	t->next_pts = pts48 + queued;
	return 0;
}

int ifc_atx_receive(ifc_atx *t) {
	av_packet_unref(t->out);
	for (;;) {
		int r = avcodec_receive_packet(t->enc, t->out);
		if (r == 0) return 1;
		if (r != AVERROR(EAGAIN)) return r;
		int fs = t->enc->frame_size;
		if (av_audio_fifo_size(t->fifo) < fs) return 0;
		r = av_frame_make_writable(t->eframe);
		if (r < 0) return r;
		if (av_audio_fifo_read(t->fifo, (void **)t->eframe->data, fs) < fs) return AVERROR_BUG;
		t->eframe->pts = t->fifo_pts;
		t->fifo_pts += fs;
		r = avcodec_send_frame(t->enc, t->eframe);
		if (r < 0) return r;
	}
}
