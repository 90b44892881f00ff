"""The `gmm-perception` commands that drive the whole package (evaluate, demo): above both the
ROS-free evaluation and the ROS layer, whose live evaluator they call."""
