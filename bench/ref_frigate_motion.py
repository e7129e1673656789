"""Reference for bench/motion.py: Frigate's ImprovedMotionDetector, re-implemented (bench only).

Rebuilt from the algorithm in frigate/motion/improved_motion.py and the defaults of
frigate/config/camera/motion.py (MotionConfig), without PTZ, config updates and debug images,
none of which run per frame on a fixed camera. Steps per frame, in Frigate's order:

1. resize the luma plane to frame_height = 100 rows (cv2.resize; Frigate's constructor
   default interpolation is INTER_NEAREST, older releases used INTER_LINEAR: both offered);
2. improve_contrast = True: 4th/96th percentiles, averaged over the last 50 frames, stretch
   the frame to 0..255;
3. set motion-masked pixels to 0, then a Gaussian blur (scipy, sigma 1, radius 1);
4. absolute difference to the running average (cv2.convertScaleAbs of the float average),
   threshold 30, one 3x3 dilation, external contours; contours with area > contour_area = 10
   become motion boxes (scaled back to full resolution);
5. motion share = total contour area / frame area; "calibrating" clears once the share is
   < 5 % with at most 4 boxes, and is set again above lightning_threshold = 0.8;
6. the average learns with cv2.accumulateWeighted at frame_alpha = 0.01 (0.2 while
   calibrating), on frames without motion or once motion has lasted 10 frames.

This module imports OpenCV and SciPy, which the box never installs (pyproject extra "bench").
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

THRESHOLD = 30
LIGHTNING_THRESHOLD = 0.8
CONTOUR_AREA = 10
FRAME_ALPHA = 0.01
CALIBRATING_ALPHA = 0.2
FRAME_HEIGHT = 100
CONTRAST_HISTORY = 50
PERSIST_BEFORE_LEARNING = 10  # frames of motion before the average learns anyway


class FrigateImprovedMotion:
    """Same inputs as Frigate's detector: the full-resolution luma plane, one frame at a time."""

    def __init__(
        self,
        frame_shape: tuple[int, int],
        mask: np.ndarray[Any, Any] | None = None,
        interpolation: int = cv2.INTER_NEAREST,
        improve_contrast: bool = True,
    ) -> None:
        h, w = frame_shape
        self.frame_shape = (h, w)
        self.scale = h / FRAME_HEIGHT
        self.size = (FRAME_HEIGHT, FRAME_HEIGHT * w // h)  # rows, cols
        self.average = np.zeros(self.size, np.float32)
        self.interpolation = interpolation
        self.improve_contrast = improve_contrast
        full_mask = np.full((h, w), 255, np.uint8) if mask is None else mask
        small = cv2.resize(full_mask, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        self.masked = np.where(small == 0)
        self.history = np.zeros((CONTRAST_HISTORY, 2), np.uint8)
        self.history[:, 1] = 255
        self.slot = 0
        self.calibrating = True
        self.motion_frames = 0

    def _contrast(self, small: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Stretch to 0..255 between slowly averaged 4th and 96th percentiles."""
        low = np.percentile(small, 4).astype(np.uint8)
        high = np.percentile(small, 96).astype(np.uint8)
        if low >= high:  # a flat image: leave it alone, as Frigate does
            return small
        self.history[self.slot] = (low, high)
        self.slot = (self.slot + 1) % CONTRAST_HISTORY
        avg_low, avg_high = np.mean(self.history, axis=0)
        clipped = np.clip(small, avg_low, avg_high)
        stretched: np.ndarray[Any, Any] = ((clipped - avg_low) / (avg_high - avg_low) * 255).astype(
            np.uint8
        )
        return stretched

    def _boxes(
        self, blurred: np.ndarray[Any, Any]
    ) -> tuple[list[tuple[int, int, int, int]], float]:
        delta = cv2.absdiff(blurred, cv2.convertScaleAbs(self.average))
        _, binary = cv2.threshold(delta, THRESHOLD, 255, cv2.THRESH_BINARY)
        dilated = cv2.dilate(binary, None, iterations=1)
        found = cv2.findContours(dilated, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours = found[0] if len(found) == 2 else found[1]  # OpenCV 4 vs 3 return shapes
        boxes, area_sum = [], 0.0
        for contour in contours:
            area = cv2.contourArea(contour)
            area_sum += area
            if area > CONTOUR_AREA:
                x, y, w, h = cv2.boundingRect(contour)
                s = self.scale
                boxes.append((int(x * s), int(y * s), int((x + w) * s), int((y + h) * s)))
        return boxes, area_sum / (self.size[0] * self.size[1])

    def detect(self, y: np.ndarray[Any, Any]) -> list[tuple[int, int, int, int]]:
        """Motion boxes (x1, y1, x2, y2) in full-resolution pixels for one luma frame."""
        gray = y[: self.frame_shape[0], : self.frame_shape[1]]
        small = cv2.resize(gray, (self.size[1], self.size[0]), interpolation=self.interpolation)
        if self.improve_contrast:
            small = self._contrast(small)
        small[self.masked] = 0
        blurred = gaussian_filter(small, sigma=1, radius=1)
        boxes, share = self._boxes(blurred)
        if share < 0.05 and len(boxes) <= 4:
            self.calibrating = False
        if self.calibrating or share > LIGHTNING_THRESHOLD:
            self.calibrating = True
        alpha = CALIBRATING_ALPHA if self.calibrating else FRAME_ALPHA
        if boxes:
            self.motion_frames += 1
            if self.motion_frames >= PERSIST_BEFORE_LEARNING:
                cv2.accumulateWeighted(blurred, self.average, alpha)
        else:
            cv2.accumulateWeighted(blurred, self.average, alpha)
            self.motion_frames = 0
        return boxes
