#include "av.h"

#include <dlfcn.h>
#include <string.h>

#define IFC_STR2(x) #x
#define IFC_STR(x) IFC_STR2(x)

void ifc_av_init(int log_level) {
	av_log_set_level(log_level);
}

int ifc_av_load_devices(void) {
	// libavdevice pulls in ~65 more shared libraries (SDL, PulseAudio, JACK,
	// libavfilter with flite and more); only device inputs need it, so it is
	// loaded on first use instead of at start (~14 MB less resident).
	void *lib = dlopen("libavdevice.so." IFC_STR(LIBAVDEVICE_VERSION_MAJOR), RTLD_NOW | RTLD_GLOBAL);
	if (!lib) return -1;
	void (*register_all)(void) = (void (*)(void))dlsym(lib, "avdevice_register_all");
	if (!register_all) return -1;
	register_all();
	return 0;
}

// ---------------------------------------------------------------- decoder

static int dec_open(ifc_dec **out, int codec_id, const AVCodecParameters *par, int threads) {
	*out = NULL;
	const AVCodec *c = avcodec_find_decoder((enum AVCodecID)codec_id);
	if (!c) return AVERROR_DECODER_NOT_FOUND;
	ifc_dec *d = av_mallocz(sizeof(*d));
	if (!d) return AVERROR(ENOMEM);
	d->ctx = avcodec_alloc_context3(c);
	d->pkt = av_packet_alloc();
	d->frame = av_frame_alloc();
	d->last = av_frame_alloc();
	if (!d->ctx || !d->pkt || !d->frame || !d->last) {
		ifc_dec_close(d);
		return AVERROR(ENOMEM);
	}
	if (par) {
		int r = avcodec_parameters_to_context(d->ctx, par);
		if (r < 0) {
			ifc_dec_close(d);
			return r;
		}
	}
	d->ctx->thread_count = threads > 0 ? threads : 0;
	// A damaged or hostile SPS may claim any size; cap pictures at 8K UHD
	// plus margin instead of libavcodec's INT_MAX pixels.
	d->ctx->max_pixels = 8192 * 4608;
	int r = avcodec_open2(d->ctx, c, NULL);
	if (r < 0) {
		ifc_dec_close(d);
		return r;
	}
	*out = d;
	return 0;
}

int ifc_dec_open(ifc_dec **out, int codec_id, int threads) { return dec_open(out, codec_id, NULL, threads); }

int ifc_dec_open_stream(ifc_dec **out, ifc_dmx *m, int threads) {
	// Packets leave the demuxer through the Annex-B filter, so the decoder
	// needs the filter's output parameters (Annex-B extradata), not the
	// container's avcC/hvcC.
	const AVCodecParameters *par = m->bsf ? m->bsf->par_out : m->fmt->streams[m->stream]->codecpar;
	return dec_open(out, par->codec_id, par, threads);
}

// receive_all keeps only the newest good picture: callers sample, they do not
// need every picture a multi-output call produced.
static int receive_all(ifc_dec *d) {
	for (;;) {
		int r = avcodec_receive_frame(d->ctx, d->frame);
		if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return 0;
		if (r < 0) return r;
		if (d->frame->decode_error_flags || (d->frame->flags & AV_FRAME_FLAG_CORRUPT)) {
			d->corrupt++;
			av_frame_unref(d->frame);
			continue;
		}
		av_frame_unref(d->last);
		av_frame_move_ref(d->last, d->frame);
		d->has_last = 1;
		d->got++;
	}
}

static int send_and_receive(ifc_dec *d, AVPacket *p) {
	d->got = 0;
	d->corrupt = 0;
	int r = avcodec_send_packet(d->ctx, p);
	if (r == AVERROR(EAGAIN)) {
		int k = receive_all(d);
		if (k < 0) return k;
		r = avcodec_send_packet(d->ctx, p);
	}
	int k = receive_all(d);
	if (!p) {
		// Drained: make the decoder usable again (loops, seeks).
		avcodec_flush_buffers(d->ctx);
	}
	if (r < 0 && r != AVERROR_EOF) return r;
	return k;
}

int ifc_dec_decode(ifc_dec *d, const uint8_t *data, int size, int64_t pts, int key) {
	if (!data) return send_and_receive(d, NULL);
	// A packet without buf is copied (with padding) by libavcodec, so the
	// caller's memory is not kept past this call.
	AVPacket *p = d->pkt;
	av_packet_unref(p);
	p->data = (uint8_t *)data;
	p->size = size;
	p->pts = pts;
	p->dts = AV_NOPTS_VALUE;
	p->flags = key ? AV_PKT_FLAG_KEY : 0;
	int r = send_and_receive(d, p);
	p->data = NULL;
	p->size = 0;
	return r;
}

int ifc_dec_send_packet(ifc_dec *d, AVPacket *pkt, int64_t pts) {
	int64_t opts = pkt->pts, odts = pkt->dts;
	pkt->pts = pts;
	pkt->dts = AV_NOPTS_VALUE;
	int r = send_and_receive(d, pkt);
	pkt->pts = opts;
	pkt->dts = odts;
	return r;
}

int ifc_dec_drain_next(ifc_dec *d) {
	if (!d->draining) {
		int r = avcodec_send_packet(d->ctx, NULL);
		if (r < 0 && r != AVERROR_EOF) return r;
		d->draining = 1;
	}
	for (;;) {
		int r = avcodec_receive_frame(d->ctx, d->frame);
		if (r == AVERROR_EOF || r == AVERROR(EAGAIN)) {
			avcodec_flush_buffers(d->ctx);
			d->draining = 0;
			return 0;
		}
		if (r < 0) return r;
		if (d->frame->decode_error_flags || (d->frame->flags & AV_FRAME_FLAG_CORRUPT)) {
			av_frame_unref(d->frame);
			continue;
		}
		av_frame_unref(d->last);
		av_frame_move_ref(d->last, d->frame);
		d->has_last = 1;
		return 1;
	}
}

void ifc_dec_set_skip(ifc_dec *d, int discard) { d->ctx->skip_frame = (enum AVDiscard)discard; }

void ifc_dec_set_skip_loop_filter(ifc_dec *d, int discard) { d->ctx->skip_loop_filter = (enum AVDiscard)discard; }

int ifc_dec_scale_bgr(ifc_dec *d, uint8_t *dst, int dst_stride, int dw, int dh) {
	if (!d->has_last) return AVERROR(EAGAIN);
	AVFrame *f = d->last;
	// Area averaging: the right filter for the 2-3x reductions of the frame
	// source (what detection was tuned on), and no slower than bilinear.
	d->sws = sws_getCachedContext(d->sws, f->width, f->height, (enum AVPixelFormat)f->format, dw, dh,
	                              AV_PIX_FMT_BGR24, SWS_AREA, NULL, NULL, NULL);
	if (!d->sws) return AVERROR(EINVAL);
	uint8_t *dsts[4] = {dst, NULL, NULL, NULL};
	int strides[4] = {dst_stride, 0, 0, 0};
	int h = sws_scale(d->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dsts, strides);
	return h == dh ? 0 : AVERROR(EINVAL);
}

void ifc_dec_close(ifc_dec *d) {
	if (!d) return;
	avcodec_free_context(&d->ctx);
	av_packet_free(&d->pkt);
	av_frame_free(&d->frame);
	av_frame_free(&d->last);
	sws_freeContext(d->sws);
	av_free(d);
}

// ---------------------------------------------------------------- encoder

int ifc_enc_open(ifc_enc **out, int w, int h, int fps, int bitrate, int gop, const char *preset, int threads) {
	*out = NULL;
	const AVCodec *c = avcodec_find_encoder_by_name("libx264");
	if (!c) return AVERROR_ENCODER_NOT_FOUND;
	ifc_enc *e = av_mallocz(sizeof(*e));
	if (!e) return AVERROR(ENOMEM);
	e->ctx = avcodec_alloc_context3(c);
	e->frame = av_frame_alloc();
	e->pkt = av_packet_alloc();
	if (!e->ctx || !e->frame || !e->pkt) {
		ifc_enc_close(e);
		return AVERROR(ENOMEM);
	}
	AVCodecContext *x = e->ctx;
	x->width = w;
	x->height = h;
	x->pix_fmt = AV_PIX_FMT_YUV420P;
	x->time_base = (AVRational){1, 90000};
	x->framerate = (AVRational){fps, 1};
	x->bit_rate = bitrate;
	x->rc_max_rate = bitrate;
	x->rc_buffer_size = bitrate;
	x->gop_size = gop;
	x->max_b_frames = 0;
	x->thread_count = threads > 0 ? threads : 0;
	// No AV_CODEC_FLAG_GLOBAL_HEADER: x264 then repeats SPS/PPS in-band in
	// front of every IDR, which is what the bus contract asks for.
	av_opt_set(x->priv_data, "preset", preset, 0);
	av_opt_set(x->priv_data, "tune", "zerolatency", 0);
	av_opt_set(x->priv_data, "forced-idr", "1", 0);
	av_opt_set(x->priv_data, "profile", "baseline", 0);
	int r = avcodec_open2(x, c, NULL);
	if (r < 0) {
		ifc_enc_close(e);
		return r;
	}
	e->frame->format = AV_PIX_FMT_YUV420P;
	e->frame->width = w;
	e->frame->height = h;
	r = av_frame_get_buffer(e->frame, 0);
	if (r < 0) {
		ifc_enc_close(e);
		return r;
	}
	*out = e;
	return 0;
}

static int enc_convert_send(ifc_enc *e, const uint8_t *const src[4], const int strides[4], int sw, int sh, int sfmt,
                            int64_t pts, int force_key) {
	int r = av_frame_make_writable(e->frame);
	if (r < 0) return r;
	e->sws = sws_getCachedContext(e->sws, sw, sh, (enum AVPixelFormat)sfmt, e->ctx->width, e->ctx->height,
	                              AV_PIX_FMT_YUV420P, SWS_BILINEAR, NULL, NULL, NULL);
	if (!e->sws) return AVERROR(EINVAL);
	sws_scale(e->sws, src, strides, 0, sh, e->frame->data, e->frame->linesize);
	e->frame->pts = pts;
	e->frame->pict_type = force_key ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
	return avcodec_send_frame(e->ctx, e->frame);
}

int ifc_enc_send_bgr(ifc_enc *e, const uint8_t *bgr, int stride, int sw, int sh, int64_t pts, int force_key) {
	const uint8_t *src[4] = {bgr, NULL, NULL, NULL};
	int strides[4] = {stride, 0, 0, 0};
	return enc_convert_send(e, src, strides, sw, sh, AV_PIX_FMT_BGR24, pts, force_key);
}

int ifc_enc_send_yuv(ifc_enc *e, const uint8_t *y, const uint8_t *u, const uint8_t *v, int ys, int us, int vs, int sw,
                     int sh, int64_t pts, int force_key) {
	const uint8_t *src[4] = {y, u, v, NULL};
	int strides[4] = {ys, us, vs, 0};
	return enc_convert_send(e, src, strides, sw, sh, AV_PIX_FMT_YUV420P, pts, force_key);
}

int ifc_enc_send_frame(ifc_enc *e, const AVFrame *f, int64_t pts, int force_key) {
	return enc_convert_send(e, (const uint8_t *const *)f->data, f->linesize, f->width, f->height, f->format, pts,
	                        force_key);
}

int ifc_enc_flush(ifc_enc *e) { return avcodec_send_frame(e->ctx, NULL); }

int ifc_enc_receive(ifc_enc *e) {
	int r = avcodec_receive_packet(e->ctx, e->pkt);
	if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return 0;
	if (r < 0) return r;
	e->out_pts = e->pkt->pts;
	e->out_key = (e->pkt->flags & AV_PKT_FLAG_KEY) != 0;
	return 1;
}

void ifc_enc_close(ifc_enc *e) {
	if (!e) return;
	avcodec_free_context(&e->ctx);
	av_frame_free(&e->frame);
	av_packet_free(&e->pkt);
	sws_freeContext(e->sws);
	av_free(e);
}

// ---------------------------------------------------------------- demuxer

static int dmx_interrupted(void *opaque) { return __atomic_load_n(&((ifc_dmx *)opaque)->interrupt, __ATOMIC_RELAXED); }

void ifc_dmx_interrupt(ifc_dmx *m) { __atomic_store_n(&m->interrupt, 1, __ATOMIC_RELAXED); }

int ifc_dmx_alloc(ifc_dmx **out) {
	*out = NULL;
	ifc_dmx *m = av_mallocz(sizeof(*m));
	if (!m) return AVERROR(ENOMEM);
	m->stream = -1;
	m->fmt = avformat_alloc_context();
	m->pkt = av_packet_alloc();
	m->out = av_packet_alloc();
	if (!m->fmt || !m->pkt || !m->out) {
		avformat_free_context(m->fmt);
		m->fmt = NULL;
		ifc_dmx_close(m);
		return AVERROR(ENOMEM);
	}
	m->fmt->interrupt_callback.callback = dmx_interrupted;
	m->fmt->interrupt_callback.opaque = m;
	*out = m;
	return 0;
}

int ifc_dmx_open(ifc_dmx *m, const char *url, const char *format, const char *opts) {
	const AVInputFormat *ifmt = NULL;
	if (format && *format) {
		ifmt = av_find_input_format(format);
		if (!ifmt) return AVERROR_DEMUXER_NOT_FOUND;
	}
	AVDictionary *dict = NULL;
	if (opts && *opts) av_dict_parse_string(&dict, opts, "=", "\n", 0);
	int r = avformat_open_input(&m->fmt, url, ifmt, &dict);
	av_dict_free(&dict);
	if (r < 0) return r; // avformat_open_input freed m->fmt and set it NULL
	r = avformat_find_stream_info(m->fmt, NULL);
	if (r < 0) {
		return r;
	}
	r = av_find_best_stream(m->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
	if (r < 0) {
		return r;
	}
	m->stream = r;
	for (unsigned i = 0; i < m->fmt->nb_streams; i++) {
		if ((int)i != m->stream) m->fmt->streams[i]->discard = AVDISCARD_ALL;
	}
	AVStream *st = m->fmt->streams[m->stream];
	const char *bsf = NULL;
	if (st->codecpar->codec_id == AV_CODEC_ID_H264) bsf = "h264_mp4toannexb";
	if (st->codecpar->codec_id == AV_CODEC_ID_HEVC) bsf = "hevc_mp4toannexb";
	if (bsf) {
		// Turns length-prefixed (mp4/mkv) samples into Annex-B and puts the
		// parameter sets of the extradata in front of every keyframe; Annex-B
		// input (ts, raw) passes through.
		const AVBitStreamFilter *f = av_bsf_get_by_name(bsf);
		if (!f || av_bsf_alloc(f, &m->bsf) < 0) {
			return AVERROR_BSF_NOT_FOUND;
		}
		avcodec_parameters_copy(m->bsf->par_in, st->codecpar);
		m->bsf->time_base_in = st->time_base;
		r = av_bsf_init(m->bsf);
		if (r < 0) {
			return r;
		}
	}
	return 0;
}

static int64_t to_ns(int64_t v, AVRational tb) {
	if (v == AV_NOPTS_VALUE) return INT64_MIN;
	return av_rescale_q(v, tb, (AVRational){1, 1000000000});
}

void ifc_dmx_info_get(ifc_dmx *m, ifc_dmx_info *info) {
	AVStream *st = m->fmt->streams[m->stream];
	AVRational fr = st->avg_frame_rate;
	if (fr.num <= 0 || fr.den <= 0) fr = st->r_frame_rate;
	info->codec_id = st->codecpar->codec_id;
	info->width = st->codecpar->width;
	info->height = st->codecpar->height;
	info->fps_num = fr.num;
	info->fps_den = fr.den;
	info->tb_num = st->time_base.num;
	info->tb_den = st->time_base.den;
	info->start_ns = to_ns(st->start_time, st->time_base);
	info->duration_ns = to_ns(st->duration, st->time_base);
	info->codec_name = avcodec_get_name(st->codecpar->codec_id);
}

int ifc_dmx_read(ifc_dmx *m) {
	AVStream *st = m->fmt->streams[m->stream];
	for (;;) {
		if (m->bsf) {
			av_packet_unref(m->out);
			int r = av_bsf_receive_packet(m->bsf, m->out);
			if (r == 0) break;
			if (r != AVERROR(EAGAIN)) return r;
		}
		int r = av_read_frame(m->fmt, m->pkt);
		if (r < 0) return r;
		if (m->pkt->stream_index != m->stream) {
			av_packet_unref(m->pkt);
			continue;
		}
		if (m->bsf) {
			r = av_bsf_send_packet(m->bsf, m->pkt);
			if (r < 0) {
				av_packet_unref(m->pkt);
				return r;
			}
			continue;
		}
		av_packet_unref(m->out);
		av_packet_move_ref(m->out, m->pkt);
		break;
	}
	m->pts_ns = to_ns(m->out->pts, st->time_base);
	m->dts_ns = to_ns(m->out->dts, st->time_base);
	m->dur_ns = m->out->duration > 0 ? to_ns(m->out->duration, st->time_base) : 0;
	m->key = (m->out->flags & AV_PKT_FLAG_KEY) != 0;
	return 0;
}

int ifc_dmx_seek_start(ifc_dmx *m) {
	AVStream *st = m->fmt->streams[m->stream];
	int64_t ts = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
	int r = avformat_seek_file(m->fmt, m->stream, INT64_MIN, ts, ts, 0);
	if (r < 0) r = av_seek_frame(m->fmt, m->stream, ts, AVSEEK_FLAG_BACKWARD);
	if (r < 0) return r;
	if (m->bsf) av_bsf_flush(m->bsf);
	av_packet_unref(m->out);
	return 0;
}

void ifc_dmx_close(ifc_dmx *m) {
	if (!m) return;
	if (m->fmt) avformat_close_input(&m->fmt);
	av_packet_free(&m->pkt);
	av_packet_free(&m->out);
	av_bsf_free(&m->bsf);
	av_free(m);
}
