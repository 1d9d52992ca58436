"""Parts of the synthetic HDR scene generator; :mod:`eapnet.data.synthetic` assembles them into scenes.

- ``config.py``: :class:`SyntheticConfig` (the scene distribution, validated), ``TRAIN_SEED`` /
  ``HELDOUT_SEED``, ``GAMMA``, the shared constants (mid-grey, size caps, the low-key meter's dark
  level) and the seed-stream words of the low-key / crowd / white-level streams.
- ``sources.py``: the shipped source photographs and textures (paths, decoding, the sRGB LUT) and the
  small numeric helpers (log-uniform draws, resize, smooth fields, colours, crops, masks, polygons).
- ``content.py``: textures and backgrounds, dynamic-range extension (lights, glints, speculars, sky)
  and low-key stage lighting (gels, light pools, silhouettes, haze beams).
- ``motion.py``: moving objects (sprites, crowds), camera shake, compositing, rendering of a frame
  and the motion mask.
- ``sensor.py``: exposure spacings, the fast standard-normal table and the sensor model (Eq. 1,
  noise, camera response, 8-bit quantisation).

Imports go one way: ``config`` and ``sources`` import no other part, ``content`` imports both,
``motion`` those three, ``sensor`` only ``config``; nothing here imports :mod:`eapnet.data.synthetic`.
"""

from __future__ import annotations
