"""CompressedCloud messages <-> pipeline.compress.Compressed (one place for both directions)."""
from __future__ import annotations

import numpy as np

from gmm_perception.data.pointcloud2 import MalformedCloudError
from gmm_perception.pipeline.compress import Compressed
from gmm_perception_msgs.msg import CompressedCloud


def compressed_to_msg(compressed: Compressed, header, object_id: int | None) -> CompressedCloud:
    msg = CompressedCloud(codec=compressed.codec, model_id=compressed.model_id,
                          point_count=int(compressed.point_count),
                          scale=float(compressed.scale), heading=float(compressed.heading),
                          encode_seconds=float(compressed.seconds))
    msg.header = header
    msg.has_object_id = object_id is not None
    msg.object_id = 0 if object_id is None else int(object_id)
    msg.centre = np.asarray(compressed.centre, np.float32)
    msg.latent = np.asarray(compressed.latent, np.float32)
    msg.data = compressed.data
    return msg


def msg_to_compressed(msg: CompressedCloud) -> tuple[Compressed, int | None]:
    """The message's content and object id (None when it has none); a message whose
    normalisation is not finite and positive is malformed."""
    centre = np.asarray(msg.centre, np.float64)
    if not (np.isfinite(centre).all() and np.isfinite(msg.scale) and msg.scale > 0
            and np.isfinite(msg.heading)):
        raise MalformedCloudError(f"normalisation centre {centre.tolist()}, scale {msg.scale}, "
                                  f"heading {msg.heading} is not finite and positive")
    latent = np.asarray(msg.latent, np.float32)
    if not np.isfinite(latent).all():
        raise MalformedCloudError("the latent code holds non-finite values")
    compressed = Compressed(codec=msg.codec, model_id=msg.model_id,
                            point_count=int(msg.point_count), centre=centre,
                            scale=float(msg.scale), heading=float(msg.heading), latent=latent,
                            data=bytes(msg.data), seconds=float(msg.encode_seconds))
    return compressed, (int(msg.object_id) if msg.has_object_id else None)
