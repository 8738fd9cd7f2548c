"""The data registry, downloader and loaders (see registry.py, download.py, loaders.py)."""
from .download import cache_dir, dataset_root, download, extract_zip, fetch_dataset, resource_path
from .loaders import ImageSet, load, load_split, split
from .registry import DATASETS, DatasetInfo, Resource, get

__all__ = ["DATASETS", "DatasetInfo", "ImageSet", "Resource", "cache_dir", "dataset_root", "download",
           "extract_zip", "fetch_dataset", "get", "load", "load_split", "resource_path", "split"]
