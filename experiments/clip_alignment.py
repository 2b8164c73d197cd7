"""Would the tiny CLIP reward the true edit? For each synthfaces attribute: faces rendered without it and the same
faces rendered with it (the ground-truth edit), and the cosine between their CLIP image change and the attribute's
text direction (conf/attribute/synthfaces_<attr>.yaml, the direction the Asyrp loss asks for). High values mean the
loss points the right way, so an attribute that does not edit is held back elsewhere (where h acts, what it moves).

    python experiments/clip_alignment.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asyrp import build
from asyrp.config import compose
from asyrp.synthfaces.edits import ATTRIBUTES, draw, lacks, switched
from asyrp.synthfaces.render import sample_face


@torch.no_grad()
def main(n: int = 64) -> None:
    clip = build.clip(compose("train", ["experiment=synthfaces_smiling"]).clip)
    faces = [sample_face(7, i) for i in range(400)]  # dataset seed 7: none of the splits the recipes use
    for name in ATTRIBUTES:
        attr = compose("train", [f"experiment=synthfaces_{name}"]).attribute
        src = [f for f in faces if lacks(f, name)][:n]
        e_src = clip.encode_image(draw(src))
        e_dst = clip.encode_image(draw([switched(f, [name]) for f in src]))
        cos = F.normalize(e_dst - e_src, dim=-1) @ clip.text_direction(list(attr.source), list(attr.target))
        print(
            f"{name:10s} cos(true image change, text direction) = {float(cos.mean()):.3f} "
            f"(min {float(cos.min()):.3f}, {len(src)} faces)"
        )


if __name__ == "__main__":
    main()
