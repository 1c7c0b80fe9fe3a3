"""ECG data layer: reading (WFDB, MIMIC-IV-ECG layout), preprocessing, the preprocessed store,
CLEF views and datasets. No Flower imports here."""
