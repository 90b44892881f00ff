"""Offline evaluation without ROS: demo scenes with exact ground truth, and ROS 2 bags.

`scene` builds a small room of held-out CAD objects and scans it with a simulated sensor; `bag`
writes those scans (with TF and ground-truth object poses) as a rosbag2 and reads bags back, both
through the pure-Python `rosbags` library, so neither needs rclpy or a ROS install.
"""
