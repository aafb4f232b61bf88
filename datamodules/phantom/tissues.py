"""Tissue codes of the internal label map (uint8). Only liver and lesion reach the written label."""
from __future__ import annotations

from enum import IntEnum

import numpy as np


class T(IntEnum):
    AIR = 0
    SUBCUT_FAT = 1
    FAT = 2  # visceral / retroperitoneal / renal sinus fat
    MUSCLE = 3
    LIVER = 4
    PORTAL_VEIN = 5  # intrahepatic portal branches (label: liver)
    HEPATIC_VEIN = 6  # intrahepatic hepatic veins (label: liver)
    LESION_HYPO = 7
    LESION_HYPER = 8
    LESION_CYST = 9
    SPLEEN = 10
    KIDNEY_CORTEX = 11
    KIDNEY_MEDULLA = 12
    URINE = 13
    GALLBLADDER = 14
    GI_WALL = 15
    GI_FLUID = 16
    GAS = 17
    STOOL = 18
    AORTA = 19
    IVC = 20
    VEIN = 21  # extrahepatic portal, splenic, mesenteric, renal veins
    HEART = 22  # blood pool
    LUNG = 23
    BONE_CORTICAL = 24
    BONE_CANCELLOUS = 25
    DISC = 26
    CSF = 27
    PANCREAS = 28
    CARTILAGE = 29
    TABLE = 30


N_TISSUES = len(T)
LIVER_TISSUES = (T.LIVER, T.PORTAL_VEIN, T.HEPATIC_VEIN)
LESION_TISSUES = (T.LESION_HYPO, T.LESION_HYPER, T.LESION_CYST)


def label_lut() -> np.ndarray:
    """Tissue code -> written label (0 background, 1 liver, 2 lesion)."""
    lut = np.zeros(256, np.uint8)
    lut[list(LIVER_TISSUES)] = 1
    lut[list(LESION_TISSUES)] = 2
    return lut
