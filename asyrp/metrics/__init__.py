"""Edit metrics as torchmetrics ``Metric``s (accumulate over batches, merge across DDP ranks, compute once), and the
one edit scorer that every caller asks for them by name.

Every state is a sum (``dist_reduce_fx="sum"``), so the value computed after syncing the states of all processes is
exactly the value of one pass over all their data (``Metric.merge_state`` does the same merge by hand).

Images are tensors in [-1, 1], (B, C, H, W). Networks are passed in as callables and never downloaded. One concern
per module:

- ``scorer``:    ``EditScorer`` (metrics by name: the sweep objective, the experiment scripts, direction labels, the
                 synthfaces judge and experiments/recipes.py score through it), ``METRICS``, ``MetricAbsent``;
- ``clip``:      ``DirectionalCLIPSimilarity`` (cos(E(x_edit) - E(x_src), text direction)), ``CLIPTextSimilarity``
                 (cos(E(x_edit), E_T(target)));
- ``oracle``:    ``OracleEditScore`` (the one oracle scorer: success and preservation, judged by any
                 ``judge(images) -> {attribute: class index}`` callable with its class names passed in;
                 ``OracleEditScore.from_oracle`` for an oracle object with ``judge`` and ``classes``), ``composed_score``
                 (several targets at once: all hold, every other head kept), ``parse_target``,
                 ``head_changes`` / ``class_frequencies`` (what a direction flips), ``logit_margin``;
- ``image``:     ``LPIPSPreservation``, ``SSIMPreservation``, ``PSNRPreservation``, ``SegmentationConsistency`` (SC: pixel
                 accuracy, or mean IoU, of a segmentation model's maps of the edit against the source);
- ``distances``: ``LPIPSDistance`` (the user's weights, a clear error when they are missing), ``RMSEDistance`` (its
                 offline stand-in), ``make_distance``;
- ``fid``:       ``FrechetDistance`` (FID with an injectable feature network; ``oracle_features`` and
                 ``clip_features`` make offline ones, ``inception_features`` Inception-v3 from the user's file), ``frechet_distance``;
- ``identity``:  ``IRSE50`` (ArcFace IR-SE50 in the official file layout), ``IdentityFeatures`` (the official crop
                 and pooling), ``load_irse50`` (the user's model_ir_se50.pth, strictly), ``IdentitySimilarity`` (ID);
- ``face_parsing``: ``BiSeNet`` (zllrunning/face-parsing.PyTorch's face parser in its file layout), ``FaceParser``
                 (images -> labels at 512, as upstream parses), ``load_bisenet`` (the user's 79999_iter.pth, strictly).
"""

from __future__ import annotations

from .clip import CLIPTextSimilarity, DirectionalCLIPSimilarity
from .distances import LPIPSDistance, LPIPSWeightsMissing, RMSEDistance, make_distance
from .face_parsing import BiSeNet, FaceParser, FaceParserWeightsMissing, load_bisenet
from .fid import FeatureFn, FrechetDistance, clip_features, frechet_distance, inception_features, oracle_features
from .identity import IRSE50, IdentityFeatures, IdentitySimilarity, IdentityWeightsMissing, load_irse50
from .image import LPIPSPreservation, PSNRPreservation, SegmentationConsistency, SSIMPreservation
from .oracle import OracleEditScore, class_frequencies, composed_score, head_changes, logit_margin, parse_target
from .scorer import METRICS, EditScorer, MetricAbsent

__all__ = [
    "EditScorer",
    "METRICS",
    "MetricAbsent",
    "DirectionalCLIPSimilarity",
    "CLIPTextSimilarity",
    "LPIPSPreservation",
    "SSIMPreservation",
    "PSNRPreservation",
    "FrechetDistance",
    "OracleEditScore",
    "SegmentationConsistency",
    "FeatureFn",
    "oracle_features",
    "clip_features",
    "inception_features",
    "frechet_distance",
    "parse_target",
    "class_frequencies",
    "head_changes",
    "composed_score",
    "logit_margin",
    "RMSEDistance",
    "LPIPSDistance",
    "LPIPSWeightsMissing",
    "make_distance",
    "IRSE50",
    "IdentityFeatures",
    "IdentitySimilarity",
    "IdentityWeightsMissing",
    "load_irse50",
    "BiSeNet",
    "FaceParser",
    "FaceParserWeightsMissing",
    "load_bisenet",
]
