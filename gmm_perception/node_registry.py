"""Our node executables: name -> (module, class, default node name).

One table serves setup.py (console scripts), the in-process runner and the launch checks.
Pure data: setup.py imports it without rclpy.
"""
NODES = {
    "preprocess_node": ("gmm_perception.ros.preprocess_node", "PreprocessNode", "preprocess"),
    "classification_node": ("gmm_perception.ros.classification_node", "ClassificationNode",
                            "classification"),
    "registration_node": ("gmm_perception.ros.registration_node", "RegistrationNode",
                          "registration"),
    "segmentation_node": ("gmm_perception.ros.segmentation_node", "SegmentationNode",
                          "segmentation"),
    "upsampling_node": ("gmm_perception.ros.upsampling_node", "UpsamplingNode", "upsampling"),
    "shape_model_node": ("gmm_perception.ros.shape_model_node", "ShapeModelNode", "shape_model"),
    "compression_node": ("gmm_perception.ros.compression_node", "CompressionNode", "compression"),
    "decompression_node": ("gmm_perception.ros.decompression_node", "DecompressionNode",
                           "decompression"),
}


def console_scripts() -> list[str]:
    return [f"{executable} = {module}:main" for executable, (module, _, _) in NODES.items()]
