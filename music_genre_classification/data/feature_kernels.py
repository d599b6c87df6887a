"""numba kernels of the 57 GTZAN features: one pass over memory where torch would make several (see data/features.py).

Each keeps the arithmetic of the torch code it replaced (float32 where that was float32, the same order of additions
for the overlap-add), so the features did not move.
"""

import numpy as np

from music_genre_classification.data.running_median import njit

fast_njit = njit(fastmath=True)  # for sums whose order does not matter: vectorised

TINY32 = np.float32(np.finfo(np.float32).tiny)


@njit
def power_magnitude(spectra: np.ndarray, power: np.ndarray, magnitude: np.ndarray) -> None:
    """[frames, bins] complex64 -> |X|^2 and |X| into float32 power and magnitude of its shape."""
    for f in range(spectra.shape[0]):
        for k in range(spectra.shape[1]):
            re, im = spectra[f, k].real, spectra[f, k].imag
            p = re * re + im * im
            power[f, k] = p
            magnitude[f, k] = np.sqrt(p)


@njit
def apply_hpss_mask(spectra: np.ndarray, harmonic: np.ndarray, percussive: np.ndarray, out: np.ndarray) -> None:
    """out = spectra [frames, bins] times librosa's soft mask H^2 / (H^2 + P^2) (0.5 where both are 0), H the median
    over frames and P the one over bins, [frames, bins] each."""
    frames, bins = spectra.shape
    half = np.float32(0.5)
    for f in range(frames):
        for k in range(bins):
            h = harmonic[f, k] * harmonic[f, k]
            p = percussive[f, k] * percussive[f, k]
            total = h + p
            mask = h / total if total > 0 else half
            x = spectra[f, k]
            out[f, k] = complex(x.real * mask, x.imag * mask)


@njit
def overlap_add(frames: np.ndarray, window: np.ndarray, envelope: np.ndarray, hop: int, length: int) -> np.ndarray:
    """Inverse of a centered STFT from its inverse-FFT frames [n, n_fft] float32: windowed, overlap-added, divided by
    the envelope (window_envelope) where that exceeds float32's tiny; samples [n_fft // 2, n_fft // 2 + length).

    Each output sample adds the frames covering it latest first (part k = 0, 1, ... of the frames), as the torch code
    did, so the sums are the same to the bit."""
    n, n_fft = frames.shape
    out = np.zeros((n + n_fft // hop - 1) * hop, np.float32)
    for k in range(n_fft // hop):
        for f in range(n):
            base, part = (f + k) * hop, k * hop
            for o in range(hop):
                out[base + o] += frames[f, part + o] * window[part + o]
    start = n_fft // 2
    result = np.empty(length, np.float32)
    for i in range(length):
        e = envelope[start + i]
        result[i] = out[start + i] / e if e > TINY32 else out[start + i]
    return result


@njit
def window_envelope(window: np.ndarray, n: int, hop: int) -> np.ndarray:
    """Sum of the squared window over n frames hop apart, in the order overlap_add adds them: float32."""
    n_fft = len(window)
    out = np.zeros((n + n_fft // hop - 1) * hop, np.float32)
    for k in range(n_fft // hop):
        for f in range(n):
            for o in range(hop):
                out[(f + k) * hop + o] += window[k * hop + o] * window[k * hop + o]
    return out


@njit
def spectral_shape(magnitude: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bandwidth (p=2) and 85% rolloff in Hz of each frame of [frames, bins] float32 magnitudes.

    Sums in float64; the rolloff's running sum is rounded to float32 at each bin and tested against float32 0.85 of
    the total, as the float32 threshold test of librosa (first bin where the cumulative sum reaches it)."""
    frames, bins = magnitude.shape
    centroid = np.empty(frames)
    bandwidth = np.empty(frames)
    rolloff = np.empty(frames)
    share = np.float32(0.85)
    for f in range(frames):
        s0, s1, s2 = 0.0, 0.0, 0.0
        for k in range(bins):
            m = np.float64(magnitude[f, k])
            s0 += m
            s1 += m * freqs[k]
            s2 += m * freqs[k] * freqs[k]
        total = 1.0 if s0 < TINY32 else s0
        c = s1 / total
        centroid[f] = c
        bandwidth[f] = np.sqrt((s2 - 2 * c * s1 + c * c * s0) / total)
        threshold = share * np.float32(s0)
        acc = 0.0
        reached = bins - 1
        for k in range(bins):
            acc += magnitude[f, k]
            if np.float32(acc) >= threshold:
                reached = k
                break
        rolloff[f] = freqs[reached]
    return centroid, bandwidth, rolloff


@fast_njit
def rms_zcr(y: np.ndarray, n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """librosa's rms (frames of the reflect-padded audio) and zero_crossing_rate (of the edge-padded audio: sign changes
    per sample, |y| <= 1e-10 counted as positive, the frame's first sample as none) of 1-D float32 audio (> n_fft).

    By blocks of hop samples: sums of squares (float64) and counts of sign changes, four blocks to a frame."""
    n, half = len(y), n_fft // 2
    frames, padded = 1 + n // hop, n + n_fft
    reflected = np.empty(padded, np.float32)
    negative = np.empty(padded, np.int8)
    for i in range(half):
        reflected[i] = y[half - i]
        reflected[half + n + i] = y[n - 2 - i]
        negative[i] = y[0] < -1e-10
        negative[half + n + i] = y[n - 1] < -1e-10
    for i in range(n):
        reflected[half + i] = y[i]
        negative[half + i] = y[i] < -1e-10
    blocks = frames + n_fft // hop - 1
    squares = np.zeros(blocks)
    changes = np.zeros(blocks, np.int64)  # block b: sign changes between samples j and j + 1, j in the block
    for b in range(blocks):
        total, count = 0.0, 0
        for j in range(b * hop, min((b + 1) * hop, padded - 1)):
            v = np.float64(reflected[j])
            total += v * v
            count += negative[j] != negative[j + 1]
        if (b + 1) * hop >= padded:  # the last sample has no successor
            v = np.float64(reflected[padded - 1])
            total += v * v
        squares[b], changes[b] = total, count
    rms = np.empty(frames, np.float32)
    zcr = np.empty(frames)
    for f in range(frames):
        total, count = 0.0, 0
        for k in range(n_fft // hop):
            total += squares[f + k]
            count += changes[f + k]
        last = f * hop + n_fft - 1  # a frame holds n_fft - 1 sample pairs: not the one after its last sample
        if last < padded - 1:
            count -= negative[last] != negative[last + 1]
        rms[f] = np.sqrt(np.float32(total / n_fft))
        zcr[f] = count / n_fft
    return rms, zcr


@njit
def onset_medians(mel_db: np.ndarray) -> np.ndarray:
    """[frames, mels] float32 -> [frames - 1]: numpy's median over mels of the positive rise from the previous frame."""
    frames, mels = mel_db.shape
    out = np.empty(frames - 1, np.float32)
    rise = np.empty(mels, np.float32)
    middle = mels // 2
    for f in range(1, frames):
        for m in range(mels):
            d = mel_db[f, m] - mel_db[f - 1, m]
            rise[m] = d if d > 0 else np.float32(0)
        ordered = np.partition(rise, middle)
        out[f - 1] = ordered[middle] if mels % 2 else (ordered[:middle].max() + ordered[middle]) / np.float32(2)
    return out


@fast_njit
def mean_m2(x: np.ndarray) -> tuple[float, float]:
    """Mean and sum of squared deviations of 1-D float32 values, in float64 (sums in any order: SIMD)."""
    total = 0.0
    for v in x:
        total += v
    mean = total / len(x)
    m2 = 0.0
    for v in x:
        d = v - mean
        m2 += d * d
    return mean, m2


@fast_njit
def columns_mean_m2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sum of squared deviations of each column of [values, columns] float32, in float64."""
    n, columns = x.shape
    mean = np.zeros(columns)
    m2 = np.zeros(columns)
    for i in range(n):
        for c in range(columns):
            mean[c] += x[i, c]
    mean /= n
    for i in range(n):
        for c in range(columns):
            d = x[i, c] - mean[c]
            m2[c] += d * d
    return mean, m2


@fast_njit
def difference_mean_m2(y: np.ndarray, h: np.ndarray) -> tuple[float, float]:
    """Mean and sum of squared deviations of y - h (float32 differences, as the percussive waveform), in float64."""
    n = len(y)
    total = 0.0
    for i in range(n):
        total += y[i] - h[i]
    mean = total / n
    m2 = 0.0
    for i in range(n):
        d = (y[i] - h[i]) - mean
        m2 += d * d
    return mean, m2


@njit
def tuning(power: np.ndarray, lo: int, hi: int, sample_rate: float, n_fft: int, edges: np.ndarray) -> float:
    """librosa's estimate_tuning of [frames, bins] float32 power (piptrack between bins lo and hi, threshold 0.1 of
    each frame's peak, then pitch_tuning with resolution 0.01): the commonest deviation of spectral peaks from A440,
    in fractions of a bin of `edges` (the 101 bin edges from -0.5 to 0.5). float32 arithmetic, as librosa's."""
    frames = power.shape[0]
    share, two, half = np.float32(0.1), np.float32(2), np.float32(0.5)
    pitches = np.empty(frames * (hi - lo), np.float32)
    magnitudes = np.empty(frames * (hi - lo), np.float32)
    count = 0
    for f in range(frames):
        row = power[f]
        floor = share * row.max()
        for k in range(lo, hi):
            here, before, after = row[k], row[k - 1], row[k + 1]
            m_here = here if here > floor else np.float32(0)
            m_before = before if before > floor else np.float32(0)
            m_after = after if after > floor else np.float32(0)
            if m_here > m_before and m_here >= m_after:
                curve = (after + before) - two * here
                slope = (after - before) / two
                shift = np.float32(0) if abs(slope) >= abs(curve) else -slope / curve
                magnitudes[count] = here + half * slope * shift
                pitches[count] = np.float32((k + np.float64(shift)) * sample_rate / n_fft)
                count += 1
    if count == 0:
        return 0.0
    magnitudes, pitches = magnitudes[:count], pitches[:count]
    middle = count // 2
    ordered = np.partition(magnitudes, middle)  # ordered[middle] in place, the smaller values before it
    threshold = ordered[middle] if count % 2 else (ordered[:middle].max() + ordered[middle]) / two
    counts = np.zeros(len(edges) - 1, np.int64)
    for i in range(count):
        if magnitudes[i] >= threshold:
            octave = np.float32(12) * np.log2(pitches[i] / np.float32(27.5))
            residual = octave - np.floor(octave)
            if residual >= half:
                residual -= np.float32(1)
            index = np.searchsorted(edges, np.float64(residual), side="right") - 1
            if 0 <= index < len(counts):
                counts[index] += 1
    return edges[np.argmax(counts)]
