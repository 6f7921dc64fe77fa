// WHIP / WHEP signalling helpers (one HTTP POST of the SDP offer, DELETE of
// the session resource named by the Location header).
import { apiFetch, responseError } from './api';

/** Resolves when ICE gathering is complete, or after timeoutMs, whichever comes first. */
export function waitIceGathering(pc: RTCPeerConnection, timeoutMs = 2000): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const onCandidate = (e: RTCPeerConnectionIceEvent) => {
      if (e.candidate === null) done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

export interface SdpAnswer {
  sdp: string;
  /** Absolute URL of the session resource (from Location), or null if the server sent none. */
  location: string | null;
}

/** POSTs an SDP offer (application/sdp) to a WHIP/WHEP endpoint and returns the answer. */
export async function exchangeSdp(endpoint: string, offerSdp: string): Promise<SdpAnswer> {
  const r = await apiFetch(endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Accept: 'application/sdp' },
    body: offerSdp,
  });
  if (!r.ok) throw await responseError(r);
  const sdp = await r.text();
  if (!sdp.trim().startsWith('v=')) throw new Error(`${endpoint}: the answer is not SDP`);
  const loc = r.headers.get('Location');
  const base = new URL(endpoint, window.location.href);
  return { sdp, location: loc ? new URL(loc, base).toString() : null };
}

/** Ends a WHIP/WHEP session; keepalive lets it complete while the page unloads. */
export async function deleteSession(location: string): Promise<void> {
  try {
    await apiFetch(location, { method: 'DELETE', keepalive: true });
  } catch {
    /* the server times the session out anyway */
  }
}

/**
 * Orders a transceiver's codecs so that H.264 comes first (packetization-mode=1
 * and constrained baseline before others); returns false when the browser
 * does not support setCodecPreferences or refuses the list.
 */
export function preferH264(tr: RTCRtpTransceiver): boolean {
  if (typeof tr.setCodecPreferences !== 'function') return false;
  const score = (c: RTCRtpCodec): number => {
    const mime = c.mimeType.toLowerCase();
    if (mime !== 'video/h264') return 0;
    const f = (c.sdpFmtpLine ?? '').toLowerCase();
    let s = 10;
    if (f.includes('packetization-mode=1')) s += 4;
    if (f.includes('profile-level-id=42e0') || f.includes('profile-level-id=4200')) s += 2;
    return s;
  };
  const sources: Array<() => RTCRtpCodec[] | undefined> = [
    () => RTCRtpSender.getCapabilities?.('video')?.codecs,
    () => RTCRtpReceiver.getCapabilities?.('video')?.codecs,
  ];
  for (const get of sources) {
    const codecs = get();
    if (!codecs || !codecs.some((c) => c.mimeType.toLowerCase() === 'video/h264')) continue;
    const ordered = [...codecs].sort((a, b) => score(b) - score(a));
    try {
      tr.setCodecPreferences(ordered);
      return true;
    } catch {
      /* try the next capability list */
    }
  }
  return false;
}
