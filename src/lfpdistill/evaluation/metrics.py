"""The one coefficient of determination used everywhere (probes, classic decoders, penalty
search, fine-tuning, report): R² per output column, and its mean over columns."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import r2_score

from ..errors import DataValidationError


def r2_columns(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """R² of every column of ``[T, D]`` (or ``[T]``) targets, as a ``[D]`` float64 array.

    A constant column scores 1 when predicted exactly, else 0 (scikit-learn's convention).

    >>> y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
    >>> r2_columns(y, y).tolist()
    [1.0, 1.0]
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise DataValidationError(
            f"R²: y_true has shape {list(y_true.shape)} but y_pred has {list(y_pred.shape)}")
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    return np.array([r2_score(y_true[:, j], y_pred[:, j]) for j in range(y_true.shape[1])],
                    dtype=np.float64)


def r2_mean(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R² averaged over the columns (e.g. x and y velocity).

    >>> y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    >>> r2_mean(y, y)
    1.0
    >>> round(r2_mean(y, np.zeros_like(y) + y.mean(axis=0)), 6)
    0.0
    """
    cols = r2_columns(y_true, y_pred)
    return float(sum(float(c) for c in cols) / len(cols))


def r2_xy(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² per velocity component and their mean: ``{"r2", "r2_x", "r2_y"}``.

    >>> r = r2_xy(np.array([[0., 1.], [1., 0.], [2., 1.]]), np.array([[0., 1.], [1., 0.], [2., 1.]]))
    >>> r["r2"]
    1.0
    """
    rx, ry = (float(c) for c in r2_columns(y_true, y_pred)[:2])
    return {"r2": (rx + ry) / 2, "r2_x": rx, "r2_y": ry}
