import { describe, expect, it } from 'vitest';
import { fraction, playRange, spansOf } from './recordings';

const iso = (s: number) => new Date(Date.UTC(2024, 0, 1, 12, 0, s)).toISOString();
const at = (s: number) => Date.UTC(2024, 0, 1, 12, 0, s);

describe('recordings timeline', () => {
  const segs = [
    { start: iso(0), end: iso(10) },
    { start: iso(10), end: iso(20) }, // continuous: one span
    { start: iso(40), end: iso(50) }, // after a gap
    { start: iso(60), end: iso(55) }, // inverted: ignored
  ];

  it('joins contiguous segments and keeps gaps', () => {
    expect(spansOf(segs)).toEqual([
      { start: at(0), end: at(20) },
      { start: at(40), end: at(50) },
    ]);
  });

  it('plays from the picked time, or the next recorded span, within its span', () => {
    const spans = spansOf(segs);
    expect(playRange(spans, at(5), 60_000)).toEqual({ start: at(5), end: at(20) });
    expect(playRange(spans, at(30), 60_000)).toEqual({ start: at(40), end: at(50) });
    expect(playRange(spans, at(41), 3_000)).toEqual({ start: at(41), end: at(44) });
    expect(playRange(spans, at(51), 60_000)).toBeNull();
  });

  it('places times on the timeline, clamped', () => {
    expect(fraction(at(5), at(0), at(10))).toBe(0.5);
    expect(fraction(at(-5), at(0), at(10))).toBe(0);
    expect(fraction(at(15), at(0), at(10))).toBe(1);
    expect(fraction(at(1), at(1), at(1))).toBe(0);
  });
});
