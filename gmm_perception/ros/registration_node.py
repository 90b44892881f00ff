"""registration_node: the pose of an object (or the motion between scans) from any starting pose.

Input `points`; the reference comes from a model file, from a library of model files (the best
match by fitness wins), from the `reference` topic, or from the previous frame (scan-to-scan).
Publishes TF (cloud frame -> child_frame, the object's pose at the cloud's stamp), `~/result`
(RegistrationResult, with the object id) and `~/aligned` (the matched reference in the cloud
frame). Clouds from the segmentation node carry an `object_id` field: each object then gets its
own frame `<child_frame>_<id>`, and its own track (pipeline.track: registered once, then tracked
by ICP from its last pose while the fit holds; the result's `mode` says which). A malformed
reference on the topic is rejected and the last good one kept.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import object_id_of, read_xyz
from gmm_perception.geometry.points import MIN_OBJECT_POINTS
from gmm_perception.geometry.transforms import transform_points
from gmm_perception.pipeline.configs import PreprocessConfig, RegistrationConfig, \
    RegistrationOutputConfig
from gmm_perception.pipeline.register import Registration
from gmm_perception.pipeline.registrar_process import RegistrarProcess
from gmm_perception.pipeline.preprocess import ObjectStep, Preprocessor
from gmm_perception.pipeline.scene import load_registrar
from gmm_perception.pipeline.track import PoseTracker
from gmm_perception.pipeline.work_queue import DropOldestQueue
from gmm_perception.ros.node_base import Cloud, ModelNode, run_node
from gmm_perception.ros.pointcloud import xyz_to_cloud
from gmm_perception.ros.tf import TfBroadcaster, make_transform_stamped, matrix_to_transform
from gmm_perception_msgs.msg import RegistrationResult

class RegistrationNode(ModelNode):
    executable = "registration_node"
    uses_tf = True  # the sensor's position (viewpoint_frame) may be set at any time

    def configure_node(self) -> None:
        config = self.configs[RegistrationConfig]
        self.viewpoint_misses = 0  # frames whose viewpoint_frame TF could not place
        self.registrar = self.load_stage(load_registrar, config)
        self._job_pool = self._new_job_pool(config)
        self.tracker = PoseTracker(self.registrar, executor=self._job_pool)
        if config.reference_mode == "file":
            self.registrar.register(self.registrar.reference[:256])  # warm-up
        elif config.reference_mode == "library":
            self.get_logger().info(f"library of {len(self.registrar.references)} models: "
                                   + ", ".join(ref.name for ref in self.registrar.references))
        elif config.reference_mode == "topic":
            self._references = DropOldestQueue(1)  # the newest, handed to the worker
            self._reference_subscription = self.create_subscription(
                PointCloud2, "reference", self._on_reference, 1)
        self.apply_configs(self.configs)
        self.result_pub = self.create_output(RegistrationResult, "~/result")
        self.aligned_pub = self.create_output(PointCloud2, "~/aligned")
        self.tf_broadcaster = TfBroadcaster(self)

    def _new_job_pool(self, config: RegistrationConfig):
        """Where background global registrations run: a child process holding its own
        registrar (file and library references: pipeline.registrar_process), else one thread
        (a reference from the topic lives in this process only). One worker either way, so
        the jobs never take both cores from the tracked objects."""
        if config.global_registration == "background" and config.reference_mode in (
                "file", "library"):
            return RegistrarProcess(config, str(self.device))
        return ThreadPoolExecutor(1, thread_name_prefix="global_registration")  # idle: no thread

    def apply_configs(self, configs: dict) -> None:
        if configs[RegistrationConfig] != self.registrar.config:
            self.registrar = self.registrar.with_config(configs[RegistrationConfig])
            self.tracker = self.tracker.with_registrar(self.registrar)
            # A child's registrar has the old config; inline -> background needs one.
            if isinstance(self._job_pool, RegistrarProcess) or \
                    configs[RegistrationConfig].global_registration == "background":
                self.tracker.close()
                self._job_pool.shutdown(wait=False, cancel_futures=True)
                self._job_pool = self.tracker.executor = self._new_job_pool(
                    configs[RegistrationConfig])
        self.step = ObjectStep(Preprocessor(configs[PreprocessConfig]), self.tracker.register,
                               keyed=True,
                               viewpoint_frame=configs[RegistrationConfig].viewpoint_frame)
        self.output_config = configs[RegistrationOutputConfig]

    def stage_diagnostics(self) -> dict:
        """How often the classical fallback ran and won (RegistrationConfig.fallback), how many
        frames were tracked and how many registered globally, and the tracks held."""
        tracker = getattr(self, "tracker", None)
        if tracker is None:
            return {}
        registrar = tracker.registrar
        return {"fallback_runs": registrar.fallback_runs, "fallback_wins": registrar.fallback_wins,
                "tracked_frames": tracker.tracked_frames,
                "registered_frames": tracker.registered_frames, "tracks": len(tracker.tracks),
                "background_jobs": len(tracker.jobs), "waiting_frames": tracker.waiting_frames,
                "viewpoint_misses": self.viewpoint_misses}

    def cleanup_node(self) -> None:
        tracker, pool = getattr(self, "tracker", None), getattr(self, "_job_pool", None)
        if tracker is not None:
            tracker.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        subscription = getattr(self, "_reference_subscription", None)
        if subscription is not None:  # a later configure creates it again
            self.destroy_subscription(subscription)
            self._reference_subscription = None

    def _on_reference(self, msg: PointCloud2) -> None:
        self._references.put(msg)  # converted on the worker, never in a callback

    def _take_reference(self) -> None:
        """Use a newly received reference; a bad one is logged and the last good one kept."""
        msg = self._references.get(timeout=0.0)
        if msg is None:
            return
        try:
            points = read_xyz(msg)
            if len(points) < MIN_OBJECT_POINTS:
                raise ValueError(f"{len(points)} finite points (< {MIN_OBJECT_POINTS})")
            name = self.configs[RegistrationConfig].reference_name or "topic"
            self.registrar.set_reference(points, name)  # replaces the old one only on success
            self.tracker.forget()  # poses against the old reference mean nothing now
        except Exception as exc:  # noqa: BLE001 - MalformedCloudError, or a model failure
            kept = "keeping the previous reference" if self.registrar.references \
                else "no reference yet"
            topic = self.resolve_topic_name("reference")
            self.get_logger().warning(f"rejected reference on '{topic}': "
                                      f"{type(exc).__name__}: {exc}; {kept}")

    def process(self, msg: PointCloud2) -> None:
        object_id = object_id_of(msg)  # a malformed id field is rejected before the work
        cloud = self.read_cloud(msg)
        mode = self.configs[RegistrationConfig].reference_mode
        if mode == "topic":
            self._take_reference()
        if mode == "previous":  # scan-to-scan: each scan is the next one's reference
            points = self.step.preprocess(cloud.points)
            if self.registrar.reference is not None:
                self._publish(cloud, self.registrar.register(points), object_id)
            self.registrar.set_reference(points, "previous_frame")
            return
        if not self.registrar.references:
            raise RuntimeError("no reference cloud received yet on 'reference'")
        self._publish(cloud, self.step(cloud.points, object_id, cloud.stamp, cloud.frame_id,
                                       self._viewpoint(cloud)), object_id)

    def _viewpoint(self, cloud: Cloud) -> np.ndarray | None:
        """The sensor's position in the cloud's frame at the cloud's stamp, else the latest one
        TF holds (a frame late on a busy machine moves it centimetres: far better than none);
        None (the fit alone decides, logged and counted) when TF cannot place it at all."""
        try:
            return self.step.viewpoint(cloud.frame_id, cloud.stamp, self.lookup)
        except Exception:  # noqa: BLE001 - not at that stamp (yet): the latest will do
            pass
        try:
            return self.step.viewpoint(
                cloud.frame_id, None,
                lambda target, source, _: self.tf_buffer.lookup_transform(target, source))
        except Exception as exc:  # noqa: BLE001 - TransformError and kin: register without it
            self.viewpoint_misses += 1
            self.get_logger().warning(
                f"no viewpoint: '{self.step.viewpoint_frame}' not placed in "
                f"'{cloud.frame_id}' ({type(exc).__name__}: {exc}); models scored by fit alone",
                throttle_duration_sec=5.0)
            return None

    def _publish(self, cloud: Cloud, result: Registration | None, object_id: int | None) -> None:
        if result is None:
            return  # a new object whose first pose is still being found in the background
        child_frame = self.output_config.child_frame
        if object_id is not None:
            child_frame = f"{child_frame}_{object_id}"
        object_in_cloud = result.T_cloud_object
        if self.output_config.publish_tf:
            self.tf_broadcaster.send(make_transform_stamped(
                object_in_cloud, cloud.frame_id, child_frame, cloud.stamp))
        message = RegistrationResult(
            object_id="" if object_id is None else str(object_id),
            source_frame=cloud.frame_id, target_frame=child_frame,
            transform=matrix_to_transform(result.transform),
            reference_name=result.reference_name, fitness=result.fitness,
            inlier_rmse=result.inlier_rmse, inlier_threshold=result.inlier_threshold,
            chamfer_distance=result.chamfer, latency_ms=result.seconds * 1e3,
            method=result.method, mode=result.mode, track_age=result.track_age)
        message.header.stamp, message.header.frame_id = cloud.stamp, cloud.frame_id
        self.result_pub.publish(message)
        if not self.wanted(self.aligned_pub):
            return
        reference = next(ref.points for ref in self.registrar.references
                         if ref.name == result.reference_name)
        aligned = transform_points(object_in_cloud, reference.astype(np.float32))
        self.aligned_pub.publish(xyz_to_cloud(aligned, cloud.frame_id, cloud.stamp))


def main(args=None) -> None:
    run_node(RegistrationNode, "registration", args)


if __name__ == "__main__":
    main()
