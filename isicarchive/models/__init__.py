"""Model objects built from archive records."""

from .annotation import Annotation
from .base import Model
from .dataset import Dataset
from .image import Image
from .lesion import Lesion
from .segmentation import Segmentation
from .study import Study

__all__ = ["Annotation", "Dataset", "Image", "Lesion", "Model", "Segmentation", "Study"]
