"""Vectorised 12-lead beat model: a 3-D cardiac dipole made of Gaussian waves.

Each beat is a sum of waves (P, septal Q, R, S, ST plateau, two-part asymmetric T and an
optional conduction-delay wave). Wave w contributes ``a_w(t) * v_w`` to the heart vector,
where ``a_w`` is a Gaussian (flat-topped for ST) in time and ``v_w`` a fixed direction in
Frank's XYZ frame (X left, Y foot, Z back), in the spirit of McSharry et al., IEEE TBME
2003 (ECGSYN) and Sameni et al., EURASIP J Adv Signal Process 2007 (3-D dipole model).
The dipole is projected on leads I, II, V1-V6 with Dower's transform (Edenbrandt &
Pahlm, J Electrocardiol 1988); III, aVR, aVL, aVF are derived from I and II exactly as
an ECG cart does, after electrode noise is added (see :mod:`clef_core.synth.signals`).

Everything is computed for all beats of a batch of records at once: the per-beat wave
shapes form an array (beats, waves, window), one batched matmul gives each beat's
dipole trace, and ``np.bincount`` scatters the traces into the records' timelines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FS = 500  # Hz
N_SAMPLES = 5000  # 10 s
DURATION_S = N_SAMPLES / FS
# MIMIC-IV-ECG lead order (aVF before aVL)
LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
# Independently measured leads: I, II, V1..V6.
MEASURED = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

# Dower transform, rows I, II, V1..V6; columns Frank X, Y, Z (mV per mV of dipole).
DOWER = np.array(
    [
        [0.632, -0.235, 0.059],
        [0.235, 1.066, -0.132],
        [-0.515, 0.157, -0.917],
        [0.044, 0.164, -1.387],
        [0.882, 0.098, -1.277],
        [1.213, 0.127, -0.601],
        [1.125, 0.127, -0.086],
        [0.831, 0.076, 0.230],
    ],
    dtype=np.float32,
)

# Wave directions (Frank XYZ, mV) of a normal adult beat.
V_P = np.array([0.06, 0.13, -0.03])
V_Q = np.array([-0.10, 0.02, -0.15])  # septal: rightward, anterior -> q in I/V6, r in V1
V_R = np.array([1.00, 0.55, 0.45])  # main: left, inferior, posterior
V_S = np.array([-0.25, -0.25, 0.35])  # terminal: rightward, superior, posterior
V_T = np.array([0.18, 0.16, -0.09])  # concordant with R in the lateral leads
V_ST = -np.array([0.8, 0.5, -0.3]) / np.linalg.norm([0.8, 0.5, -0.3])  # lateral ST depression
V_RBBB = np.array([-0.40, 0.05, -0.60])  # late rightward-anterior forces: R' in V1
V_LBBB = np.array([0.70, 0.10, 0.60])  # slow leftward-posterior forces: broad R in V6, QS in V1
V_ATRIAL = np.array([0.10, 0.10, -0.25])  # fibrillatory waves, best seen in V1
R_AXIS_DEG = float(np.degrees(np.arctan2(V_R[1], V_R[0])))

N_WAVES = 8  # P, Q, R, S, ST, Ta, Tb, C
PRE_S = 0.45  # beat window starts this long before the R peak
WINDOW = 550  # samples per beat window (-0.45 s .. +0.65 s)
MIN_RR_S = 0.3
MAX_BEATS = int(np.ceil((DURATION_S + 1.2) / MIN_RR_S)) + 1


@dataclass
class BeatParams:
    """Per-record waveform parameters (arrays of length B; times in seconds)."""

    hr: np.ndarray  # beats per minute (ventricular rate)
    hrv: np.ndarray  # relative beat-to-beat RR variability in sinus rhythm
    af: np.ndarray  # bool: atrial fibrillation (irregular RR, no P, f-waves)
    pr: np.ndarray
    qrs: np.ndarray
    qtc: np.ndarray  # Fridericia-corrected QT
    axis_deg: np.ndarray  # frontal QRS axis
    amp: np.ndarray  # overall amplitude (habitus)
    r_scale: np.ndarray  # LV voltage factor on R and S (LVH)
    strain: np.ndarray  # 0..1 LV strain (T inversion + ST depression laterally)
    st_mv: np.ndarray  # ST depression, mV along the lateral direction
    conduction: np.ndarray  # 0 none, 1 RBBB, 2 LBBB
    t_scale: np.ndarray | None = None  # factor on the T wave (synth.risk_signal); None: 1

    def __len__(self) -> int:
        return len(self.hr)


def rhythm(p: BeatParams, u: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (B, MAX_BEATS) with NaN where no beat, and each beat's preceding RR.

    Sinus: RR_k = RR0 (1 + rsa sin(2 pi f_resp t_k + phi) + hrv/2 e_k), the respiratory
    sinus arrhythmia carrying half the variability. AF: RR_k = RR0 exp(s e_k - s^2/2),
    s in [0.15, 0.3], i.e. irregularly irregular. ``u`` (B, >=4) uniforms, ``e`` (B, MAX_BEATS) normals.
    """
    rr0 = 60.0 / p.hr
    k = np.arange(MAX_BEATS)
    resp_hz = 0.2 + 0.13 * u[:, 0]
    phase = 2 * np.pi * u[:, 1]
    rsa = 0.5 * p.hrv * np.sqrt(2)  # sinusoid with RMS hrv/2
    sinus = rr0[:, None] * (1 + rsa[:, None] * np.sin(2 * np.pi * resp_hz[:, None] * k * rr0[:, None] + phase[:, None]) + 0.5 * p.hrv[:, None] * e)
    s = 0.15 + 0.15 * u[:, 2]
    fib = rr0[:, None] * np.exp(s[:, None] * e - 0.5 * s[:, None] ** 2)
    rr = np.maximum(np.where(p.af[:, None], fib, sinus), MIN_RR_S)
    start = -PRE_S - 0.2 - u[:, 3] * rr0
    t = start[:, None] + np.concatenate([np.zeros((len(rr), 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    rr_prev = np.concatenate([rr0[:, None], rr[:, :-1]], axis=1)
    t = np.where((t >= -(WINDOW / FS - PRE_S)) & (t <= DURATION_S + PRE_S - 0.01), t, np.nan)
    return t, rr_prev


def _rotation_z(deg: np.ndarray) -> np.ndarray:
    """(B, 3, 3) rotations in the frontal (X-Y) plane."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    rot = np.zeros((len(a), 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    return rot


def wave_vectors(p: BeatParams) -> np.ndarray:
    """(B, N_WAVES, 3) wave directions of each record, in mV."""
    b = len(p)
    rbbb, lbbb = p.conduction == 1, p.conduction == 2
    v = np.zeros((b, N_WAVES, 3))
    v[:, 0] = np.where(p.af[:, None], 0.0, V_P)
    v[:, 1] = np.where(lbbb[:, None], 0.0, V_Q)  # LBBB: septal activation reversed, no q
    v[:, 2] = p.r_scale[:, None] * V_R
    v[:, 3] = p.r_scale[:, None] * V_S
    v[:, 4] = (p.st_mv + 0.12 * p.strain)[:, None] * V_ST
    t_vec = (1 - 1.8 * p.strain)[:, None] * V_T
    t_vec = np.where(lbbb[:, None], -0.4 * V_T - 0.25 * V_LBBB, t_vec)
    t_vec = np.where(rbbb[:, None], t_vec - 0.3 * V_RBBB, t_vec)
    if p.t_scale is not None:
        t_vec = p.t_scale[:, None] * t_vec
    v[:, 5] = 0.45 * t_vec
    v[:, 6] = 0.8 * t_vec
    v[:, 7] = np.where(rbbb[:, None], V_RBBB, np.where(lbbb[:, None], V_LBBB, 0.0))
    rot = _rotation_z(p.axis_deg - R_AXIS_DEG)
    return p.amp[:, None, None] * np.einsum("bij,bwj->bwi", rot, v)


def _wave_timing(p: BeatParams, rec: np.ndarray, rr_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres and widths (beats, N_WAVES) relative to each beat's R peak, seconds."""
    qrs = p.qrs[rec]
    bbb = p.conduction[rec] > 0
    k = np.where(bbb, 1.0, qrs / 0.09)  # narrow QRS: all components scale with duration
    half = 0.5 * qrs
    qt = p.qtc[rec] * np.cbrt(rr_prev)  # Fridericia: QT = QTc * RR^(1/3)
    t_peak = np.clip(-half + qt - 0.1, half + 0.1, 0.45)
    lbbb = p.conduction[rec] == 2
    centre = np.stack(
        [
            -half - p.pr[rec] + 0.05,
            -0.025 * k,
            np.zeros_like(qrs),
            0.026 * k,
            half + 0.06,
            t_peak - 0.045,
            t_peak,
            np.where(lbbb, 0.035, half - 0.03),
        ],
        axis=1,
    )
    width = np.stack(
        [
            np.full_like(qrs, 0.022),
            0.008 * k,
            np.where(lbbb, 0.019, 0.0105 * k),
            0.009 * k,
            np.full_like(qrs, 0.055),  # flat-top half width
            np.full_like(qrs, 0.055),
            np.full_like(qrs, 0.04),
            np.where(lbbb, 0.02, 0.018),
        ],
        axis=1,
    )
    return centre, width


def dipole(p: BeatParams, r_times: np.ndarray, rr_prev: np.ndarray, u_resp: np.ndarray) -> np.ndarray:
    """(B, 3, N_SAMPLES) heart vector of every record, mV."""
    b = len(p)
    rec, beat = np.nonzero(~np.isnan(r_times))
    t_r = r_times[rec, beat]
    centre, width = _wave_timing(p, rec, rr_prev[rec, beat])
    tl = (np.arange(WINDOW, dtype=np.float32) / FS - PRE_S)[None, None, :]
    z = (tl - centre[:, :, None].astype(np.float32)) / width[:, :, None].astype(np.float32)
    z = z * z
    z[:, 4] *= z[:, 4]  # ST: exp(-z^4), a plateau
    g = np.exp(-0.5 * z)
    # respiration modulates QRS amplitude by +-6 % (electrical axis / impedance changes)
    resp = 1 + 0.06 * np.sin(2 * np.pi * (0.2 + 0.13 * u_resp[rec, 0]) * t_r + 2 * np.pi * u_resp[rec, 1])
    g[:, 1:4] *= resp[:, None, None].astype(np.float32)
    vec = wave_vectors(p).astype(np.float32)[rec]  # (beats, waves, 3)
    traces = np.matmul(vec.transpose(0, 2, 1), g)  # (beats, 3, WINDOW)
    r_idx = np.rint(t_r * FS).astype(np.int64)
    length = N_SAMPLES + 2 * WINDOW
    pos = (rec * length + r_idx + WINDOW - int(PRE_S * FS))[:, None] + np.arange(WINDOW)[None, :]
    out = np.empty((b, 3, N_SAMPLES), dtype=np.float32)
    for c in range(3):
        canvas = np.bincount(pos.ravel(), weights=traces[:, c, :].ravel(), minlength=b * length)
        out[:, c, :] = canvas.reshape(b, length)[:, WINDOW : WINDOW + N_SAMPLES]
    return out


def fibrillatory_waves(u: np.ndarray, amp_mv: np.ndarray) -> np.ndarray:
    """(B, 3, N_SAMPLES) atrial f-waves: 4-8 Hz, three drifting components, slow envelope."""
    t = np.arange(N_SAMPLES, dtype=np.float32) / FS
    f0 = 4.0 + 4.0 * u[:, 0]
    wave = np.zeros((len(u), N_SAMPLES), dtype=np.float32)
    for j, (mult, w) in enumerate(((1.0, 1.0), (1.13, 0.6), (0.87, 0.5))):
        wave += w * np.sin(2 * np.pi * (f0 * mult)[:, None] * t + 2 * np.pi * u[:, 1 + j, None])
    envelope = 1 + 0.4 * np.sin(2 * np.pi * (0.1 + 0.3 * u[:, 4])[:, None] * t + 2 * np.pi * u[:, 5, None])
    direction = (V_ATRIAL / np.linalg.norm(V_ATRIAL)).astype(np.float32)
    return (amp_mv[:, None] * wave * envelope / 1.3)[:, None, :] * direction[None, :, None]


def project(dip: np.ndarray) -> np.ndarray:
    """(B, 3, T) dipole -> (B, 8, T) measured leads I, II, V1..V6."""
    return np.matmul(DOWER, dip)


def derive_limb_leads(measured: np.ndarray) -> np.ndarray:
    """(B, 8, T) measured leads -> (B, 12, T) in MIMIC order, limb leads from I and II.

    III = II - I, aVR = -(I + II)/2, aVF = II - I/2, aVL = I - II/2 (Einthoven/Goldberger).
    """
    lead_i, lead_ii = measured[:, 0], measured[:, 1]
    limb = np.stack([lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_ii - lead_i / 2, lead_i - lead_ii / 2], axis=1)
    return np.concatenate([limb, measured[:, 2:]], axis=1)
