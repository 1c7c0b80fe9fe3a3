"""AHA PREVENT equations: 10- and 30-year risk of total CVD, ASCVD and heart failure.

Source: Khan SS, Matsushita K, Sang Y, et al. Development and validation of the American Heart
Association's PREVENT equations. Circulation 2024;149:430-449, Supplemental Material (sex- and
outcome-specific logistic models; tables of the base model and of the models that add HbA1c or
the urine albumin-to-creatinine ratio). The coefficients below are those tables (7 significant
digits), cross-checked against the CRAN package preventr 0.12.0, whose test values
tests/test_risk_models.py reproduces.

Predictors (every model centres at age 55, non-HDL-C 3.5 mmol/L, HDL-C 1.3 mmol/L, SBP 130,
BMI 25, eGFR 90, HbA1c 5.3 %; splines with knots at SBP 110, BMI 30, eGFR 60):
  age = (age - 55)/10 (30-year models also age^2);  nonhdl = (TC - HDL) [mmol/L] - 3.5;
  hdl = (HDL - 1.3)/0.3;  sbp_lt110 = (min(SBP,110) - 110)/20;  sbp_ge110 = (max(SBP,110) - 130)/20;
  bmi_lt30 = (min(BMI,30) - 25)/5;  bmi_ge30 = (max(BMI,30) - 30)/5;
  egfr_lt60 = (min(eGFR,60) - 60)/-15;  egfr_ge60 = (max(eGFR,60) - 90)/-15;
  treated_sbp = bp_treated * sbp_ge110;  statin_nonhdl = statin * nonhdl;
  age_x = age * x for x in nonhdl, hdl, sbp_ge110, diabetes, smoking, bmi_ge30, egfr_lt60;
  HbA1c model: hba1c_dm = (HbA1c - 5.3) * diabetes, hba1c_no_dm = (HbA1c - 5.3) * (1 - diabetes),
               hba1c_missing = 1 when HbA1c is unknown (then both HbA1c terms are 0);
  UACR model:  ln_uacr = ln(UACR [mg/g]), uacr_missing = 1 when unknown (then ln_uacr = 0).
  risk = 1 / (1 + exp(-(const + b . x)))

BMI enters the heart-failure models only; cholesterol and statin the total-CVD and ASCVD models.
Defined for ages 30-79. Units: SBP mmHg, cholesterol mmol/L, BMI kg/m2, eGFR mL/min/1.73 m2.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

AGE_RANGE = (30.0, 79.0)
VARIANTS = ("base", "hba1c", "uacr")
HORIZONS = (10, 30)
OUTCOMES = ("total_cvd", "ascvd", "heart_failure")
_COLUMNS = [(o, s) for o in OUTCOMES for s in ("female", "male")]

# term, then female/male total CVD, female/male ASCVD, female/male heart failure
_TABLES = {
    ("base", 10): """
        age             0.7939329   0.7688528    0.719883   0.7099847   0.8998235   0.8972642
        nonhdl          0.0305239   0.0736174   0.1176967   0.1658663         0.0         0.0
        hdl            -0.1606857  -0.0954431   -0.151185  -0.1144285         0.0         0.0
        sbp_lt110      -0.2394003  -0.4347345  -0.0835358  -0.2837212  -0.4559771  -0.6811466
        sbp_ge110       0.3600781   0.3362658   0.3592852   0.3239977   0.3576505   0.3634461
        diabetes        0.8667604   0.7692857   0.8348585   0.7189597    1.038346    0.923776
        smoking         0.5360739   0.4386871   0.4831078   0.3956973    0.583916   0.5023736
        bmi_lt30              0.0         0.0         0.0         0.0  -0.0072294  -0.0485841
        bmi_ge30              0.0         0.0         0.0         0.0   0.2997706   0.3726929
        egfr_lt60       0.6045917   0.5378979   0.4864619   0.3690075   0.7451638   0.6926917
        egfr_ge60       0.0433769   0.0164827   0.0397779   0.0203619   0.0557087   0.0251827
        bp_treated      0.3151672    0.288879   0.2265309   0.2036522   0.3534442   0.2980922
        statin         -0.1477655  -0.1337349  -0.0592374  -0.0865581         0.0         0.0
        treated_sbp    -0.0663612  -0.0475924  -0.0395762  -0.0322916  -0.0981511  -0.0497731
        statin_nonhdl   0.1197879    0.150273   0.0844423    0.114563         0.0         0.0
        age_nonhdl     -0.0819715  -0.0517874  -0.0567839  -0.0300005         0.0         0.0
        age_hdl         0.0306769   0.0191169   0.0325692   0.0232747         0.0         0.0
        age_sbp        -0.0946348  -0.1049477  -0.1035985  -0.0927024  -0.0946663  -0.1289201
        age_diabetes     -0.27057  -0.2251948  -0.2417542  -0.2018525  -0.3581041  -0.3040924
        age_smoking     -0.078715  -0.0895067  -0.0791142  -0.0970527  -0.1159453  -0.1401688
        age_bmi               0.0         0.0         0.0         0.0   -0.003878   0.0068126
        age_egfr       -0.1637806  -0.1543702  -0.1671492  -0.1217081  -0.1884289  -0.1797778
        const           -3.307728   -3.031168   -3.819975   -3.500655   -4.310409   -3.946391
    """,
    ("base", 30): """
        age             0.5503079   0.4627309   0.4669202   0.3994099   0.6254374   0.5681541
        age2           -0.0928369  -0.0984281  -0.0893118  -0.0937484  -0.0983038  -0.1048388
        nonhdl          0.0409794   0.0836088   0.1256901   0.1744643         0.0         0.0
        hdl            -0.1663306  -0.1029824  -0.1542255   -0.120203         0.0         0.0
        sbp_lt110      -0.1628654  -0.2140352  -0.0018093  -0.0665117  -0.3919241  -0.4761564
        sbp_ge110       0.3299505   0.2904325    0.322949   0.2753037   0.3142295     0.30324
        diabetes        0.6793894   0.5331276   0.6296707   0.4790257   0.8330787   0.6840338
        smoking         0.3196112   0.2141914    0.268292   0.1782635   0.3438651   0.2656273
        bmi_lt30              0.0         0.0         0.0         0.0   0.0594874   0.0833107
        bmi_ge30              0.0         0.0         0.0         0.0   0.2525536     0.26999
        egfr_lt60       0.1857101   0.1155556    0.100106  -0.0218789   0.2981642   0.2541805
        egfr_ge60       0.0553528   0.0603775   0.0499663   0.0602553   0.0667159   0.0638923
        bp_treated         0.2894    0.232714   0.1875292   0.1421182    0.333921   0.2583631
        statin          -0.075688  -0.0272112   0.0152476   0.0135996         0.0         0.0
        treated_sbp     -0.056367  -0.0384488  -0.0276123  -0.0218265  -0.0893177  -0.0391938
        statin_nonhdl   0.1071019    0.134192   0.0736147   0.1013148         0.0         0.0
        age_nonhdl     -0.0751438  -0.0511759  -0.0521962  -0.0312619         0.0         0.0
        age_hdl         0.0301786   0.0165865   0.0316918    0.020673         0.0         0.0
        age_sbp        -0.0998776  -0.1101437  -0.1046101  -0.0920935  -0.0974299  -0.1269124
        age_diabetes   -0.3206166  -0.2585943  -0.2727793  -0.2159947   -0.404855  -0.3273572
        age_smoking    -0.1607862  -0.1566406  -0.1530907  -0.1548811  -0.1982991  -0.2043019
        age_bmi               0.0         0.0         0.0         0.0  -0.0035619  -0.0182831
        age_egfr       -0.1450788  -0.1166776  -0.1299149  -0.0712547  -0.1564215  -0.1342618
        const           -1.318827   -1.148204   -1.974074   -1.736444   -2.205379    -1.95751
    """,
    ("hba1c", 10): """
        age             0.7858178   0.7699177   0.7111831   0.7064146   0.8997391    0.911787
        nonhdl          0.0194438   0.0605093    0.106797   0.1532267         0.0         0.0
        hdl            -0.1521964  -0.0888525  -0.1425745  -0.1082166         0.0         0.0
        sbp_lt110      -0.2296681   -0.417713  -0.0736824  -0.2675288  -0.4422749  -0.6568071
        sbp_ge110       0.3465777   0.3288657   0.3480844   0.3173809   0.3378691   0.3524645
        diabetes        0.5366241   0.4759471   0.5112951    0.432604    0.681284   0.5849752
        smoking         0.5411682   0.4385663   0.4880292   0.3958842   0.5886005   0.5014014
        bmi_lt30              0.0         0.0         0.0         0.0  -0.0148657  -0.0512352
        bmi_ge30              0.0         0.0         0.0         0.0   0.2958374    0.365294
        egfr_lt60       0.5931898   0.5334616   0.4754997   0.3665014     0.73447   0.6892219
        egfr_ge60       0.0472458   0.0206431   0.0438132   0.0250243     0.05926   0.0292377
        bp_treated      0.3158567   0.2917524   0.2259093   0.2061158   0.3543475   0.3038296
        statin         -0.1535174  -0.1383313  -0.0648872  -0.0899988         0.0         0.0
        treated_sbp    -0.0687752  -0.0482622  -0.0437645  -0.0334959  -0.1002139  -0.0515032
        statin_nonhdl   0.1054746   0.1393796   0.0697082   0.1034168         0.0         0.0
        age_nonhdl     -0.0761119  -0.0463501  -0.0506382  -0.0255406         0.0         0.0
        age_hdl         0.0307469   0.0205926   0.0327475   0.0247538         0.0         0.0
        age_sbp        -0.0905966  -0.1037717  -0.0996442  -0.0917441  -0.0878765  -0.1262343
        age_diabetes   -0.2241857  -0.1737697  -0.1924338  -0.1499195   -0.303684  -0.2449514
        age_smoking     -0.080186  -0.0915839  -0.0803539   -0.098089  -0.1178943  -0.1392217
        age_bmi               0.0         0.0         0.0         0.0   -0.008345   0.0009592
        age_egfr       -0.1667286  -0.1637039  -0.1682586  -0.1305231  -0.1912183  -0.1917105
        hba1c_dm        0.1338348     0.13159   0.1339055   0.1157161   0.1856442   0.1652857
        hba1c_no_dm     0.1622409   0.1295185   0.1596461   0.1288303   0.1833083   0.1505859
        hba1c_missing  -0.0142496  -0.0128373   0.0015678  -0.0010001  -0.0143112  -0.0113444
        const           -3.306162   -3.040901   -3.838746    -3.51835   -4.288225   -3.961954
    """,
    ("hba1c", 30): """
        age             0.5343493   0.4519873   0.4555574   0.3883267   0.6210856   0.5703729
        age2           -0.0952314   -0.101624  -0.0903501  -0.0958114  -0.1000972  -0.1084544
        nonhdl          0.0298124   0.0700456   0.1148321   0.1613374         0.0         0.0
        hdl            -0.1578451  -0.0968005  -0.1458754  -0.1144418         0.0         0.0
        sbp_lt110      -0.1504488  -0.1923527   0.0089323  -0.0474338  -0.3773697  -0.4471767
        sbp_ge110       0.3173368   0.2827043   0.3139029   0.2691281    0.295316   0.2910152
        diabetes        0.4314738   0.3417152    0.386281   0.2859773   0.5681692   0.4507242
        smoking         0.3209399   0.2105272   0.2714309   0.1759553   0.3449139    0.259585
        bmi_lt30              0.0         0.0         0.0         0.0   0.0540094   0.0850676
        bmi_ge30              0.0         0.0         0.0         0.0    0.249767   0.2637222
        egfr_lt60       0.1771435   0.1113291   0.0930987  -0.0242898   0.2875781   0.2454706
        egfr_ge60       0.0582828   0.0640135   0.0532216   0.0644523   0.0692013   0.0675649
        bp_treated      0.2888947   0.2334248   0.1862181    0.142874   0.3334936   0.2611991
        statin         -0.0795886  -0.0299421   0.0106964   0.0115062         0.0         0.0
        treated_sbp    -0.0600438  -0.0393204  -0.0329713    -0.02333  -0.0922339  -0.0408908
        statin_nonhdl   0.0920598   0.1228854   0.0583609   0.0899664         0.0         0.0
        age_nonhdl     -0.0696108  -0.0463737  -0.0463273  -0.0275478         0.0         0.0
        age_hdl         0.0308807   0.0184599   0.0324717    0.022573         0.0         0.0
        age_sbp        -0.0954051  -0.1085744  -0.1004777   -0.090802  -0.0907885  -0.1241051
        age_diabetes   -0.2763408  -0.2208049  -0.2266944  -0.1771894  -0.3554646  -0.2849461
        age_smoking    -0.1623944  -0.1577978  -0.1541859  -0.1548847  -0.2008846  -0.2032308
        age_bmi               0.0         0.0         0.0         0.0  -0.0079611  -0.0239714
        age_egfr       -0.1430514  -0.1179375  -0.1286005  -0.0732754   -0.156803   -0.138301
        hba1c_dm        0.0940543   0.0768169   0.0875827   0.0591089   0.1448336   0.1101184
        hba1c_no_dm     0.1116486   0.0777295   0.1126417   0.0821158   0.1277838   0.0949198
        hba1c_missing  -0.0024798   0.0092204   0.0124356   0.0179755  -0.0022589   0.0084192
        const           -1.341059   -1.180767   -2.011533   -1.777708   -2.193553   -1.974999
    """,
    ("uacr", 10): """
        age             0.7969249   0.7768655   0.7201999   0.7141718   0.9145975   0.9111795
        nonhdl          0.0256635   0.0659949   0.1135771   0.1602194         0.0         0.0
        hdl            -0.1588107  -0.0951111  -0.1493506  -0.1139086         0.0         0.0
        sbp_lt110      -0.2255701   -0.420667  -0.0726677  -0.2719456  -0.4441346  -0.6693649
        sbp_ge110       0.3396649   0.3120151   0.3436259   0.3058719   0.3260323   0.3290082
        diabetes        0.8047515    0.698521   0.7773094   0.6600631   0.9611365   0.8377655
        smoking         0.5285338   0.4314669   0.4746662   0.3884022   0.5755787   0.4978917
        bmi_lt30              0.0         0.0         0.0         0.0   0.0008831   -0.042749
        bmi_ge30              0.0         0.0         0.0         0.0   0.2988964   0.3624165
        egfr_lt60       0.4803511   0.3841364   0.3824646   0.2466316   0.5915291   0.5075796
        egfr_ge60       0.0434472    0.009384   0.0394178   0.0151852   0.0556823   0.0137716
        bp_treated      0.2985207   0.2676494   0.2125182    0.186167   0.3314097   0.2739963
        statin         -0.1497787  -0.1390966  -0.0603046  -0.0894395         0.0         0.0
        treated_sbp    -0.0742889  -0.0579315  -0.0466053  -0.0411884  -0.1078596  -0.0645712
        statin_nonhdl    0.106756   0.1383719   0.0733118   0.1058212         0.0         0.0
        age_nonhdl     -0.0778126  -0.0488332  -0.0534262   -0.028089         0.0         0.0
        age_hdl         0.0306768   0.0200406   0.0325689   0.0240427         0.0         0.0
        age_sbp        -0.0907168   -0.102454  -0.0999887  -0.0912325  -0.0875231  -0.1230039
        age_diabetes   -0.2705122  -0.2236355  -0.2411762  -0.2004894   -0.356859  -0.3013297
        age_smoking    -0.0830564   -0.089485  -0.0826941   -0.096936  -0.1220248  -0.1410318
        age_bmi               0.0         0.0         0.0         0.0  -0.0053637   0.0021531
        age_egfr       -0.1389249  -0.1321848  -0.1444737  -0.1022867  -0.1610389  -0.1548018
        ln_uacr         0.1793037   0.1887974   0.1501217   0.1510073   0.2197281   0.2306299
        uacr_missing    0.0132073   0.0916979   0.0050257      0.0556   0.0326667   0.1472194
        const           -3.738341   -3.510705   -4.174614    -3.85146   -4.841506   -4.556907
    """,
    ("uacr", 30): """
        age             0.5491768    0.464491   0.4629669   0.3995607   0.6319513   0.5750236
        age2           -0.0937311  -0.0998895  -0.0902777   -0.094557  -0.1009284  -0.1062268
        nonhdl          0.0359847   0.0757606   0.1215214   0.1686692         0.0         0.0
        hdl            -0.1642965  -0.1031778  -0.1522069  -0.1202145         0.0         0.0
        sbp_lt110      -0.1483404  -0.1990714   0.0092679  -0.0555561  -0.3787175  -0.4633994
        sbp_ge110        0.313353   0.2715816   0.3113609   0.2633566   0.2863393   0.2742874
        diabetes        0.6253766   0.4754637    0.581256   0.4362036   0.7631221    0.612208
        smoking         0.3147172   0.2069672    0.263167   0.1716233   0.3355843   0.2614987
        bmi_lt30              0.0         0.0         0.0         0.0   0.0677084   0.0895459
        bmi_ge30              0.0         0.0         0.0         0.0   0.2517238   0.2632424
        egfr_lt60       0.1094663   0.0331103   0.0391726  -0.0775282   0.1940067   0.1430472
        egfr_ge60       0.0550705   0.0540474   0.0492959   0.0561236   0.0664006   0.0535184
        bp_treated      0.2782433   0.2189911   0.1786178   0.1319331   0.3171436   0.2417468
        statin         -0.0786239  -0.0331044   0.0131058   0.0102428         0.0         0.0
        treated_sbp    -0.0628947    -0.04534  -0.0325135  -0.0269294  -0.0970661  -0.0498574
        statin_nonhdl    0.093204   0.1214535   0.0617093   0.0920557         0.0         0.0
        age_nonhdl     -0.0710685  -0.0483995  -0.0489189  -0.0297021         0.0         0.0
        age_hdl         0.0306363   0.0178997   0.0321079   0.0217935         0.0         0.0
        age_sbp        -0.0951455  -0.1059324  -0.1003185  -0.0893347  -0.0896239  -0.1193827
        age_diabetes   -0.3168231  -0.2492861  -0.2684574  -0.2081467   -0.400743   -0.316651
        age_smoking    -0.1636391  -0.1561543  -0.1547301  -0.1542716  -0.2042041  -0.2046122
        age_bmi               0.0         0.0         0.0         0.0  -0.0054699  -0.0216878
        age_egfr       -0.1265483  -0.1012429  -0.1130703  -0.0597254    -0.13602  -0.1165637
        ln_uacr         0.1142251   0.1007571   0.0903471   0.0684872   0.1486028   0.1366452
        uacr_missing   -0.0055863   0.0572456  -0.0145818   0.0193962    0.011608   0.1078355
        const           -1.583738   -1.398727   -2.178888   -1.873449   -2.538952   -2.314872
    """,
}


def _parse(text: str) -> tuple[tuple[str, ...], dict[tuple[str, str], np.ndarray]]:
    rows = [line.split() for line in text.strip().splitlines()]
    terms = tuple(r[0] for r in rows)
    values = np.array([[float(v) for v in r[1:]] for r in rows])
    return terms, {col: values[:, j] for j, col in enumerate(_COLUMNS)}


COEFFICIENTS = {key: _parse(text) for key, text in _TABLES.items()}


def prevent_terms(x: Mapping[str, np.ndarray], horizon: int, variant: str) -> dict[str, np.ndarray]:
    """The predictor columns of one model (name -> array), from inputs in the module's units.

    ``x`` holds age, sbp, total_chol, hdl (mmol/L), smoking, diabetes, bmi, egfr, bp_treated,
    statin, and for the variants hba1c (%, NaN = unknown) / uacr (mg/g, NaN = unknown)."""
    age = (x["age"] - 55.0) / 10.0
    nonhdl = x["total_chol"] - x["hdl"] - 3.5
    hdl = (x["hdl"] - 1.3) / 0.3
    sbp_ge110 = (np.maximum(x["sbp"], 110.0) - 130.0) / 20.0
    bmi_ge30 = (np.maximum(x["bmi"], 30.0) - 30.0) / 5.0
    egfr_lt60 = (np.minimum(x["egfr"], 60.0) - 60.0) / -15.0
    dm, smk = x["diabetes"], x["smoking"]
    t = {
        "age": age, "age2": age**2, "nonhdl": nonhdl, "hdl": hdl,
        "sbp_lt110": (np.minimum(x["sbp"], 110.0) - 110.0) / 20.0, "sbp_ge110": sbp_ge110,
        "diabetes": dm, "smoking": smk,
        "bmi_lt30": (np.minimum(x["bmi"], 30.0) - 25.0) / 5.0, "bmi_ge30": bmi_ge30,
        "egfr_lt60": egfr_lt60, "egfr_ge60": (np.maximum(x["egfr"], 60.0) - 90.0) / -15.0,
        "bp_treated": x["bp_treated"], "statin": x["statin"],
        "treated_sbp": x["bp_treated"] * sbp_ge110, "statin_nonhdl": x["statin"] * nonhdl,
        "age_nonhdl": age * nonhdl, "age_hdl": age * hdl, "age_sbp": age * sbp_ge110,
        "age_diabetes": age * dm, "age_smoking": age * smk, "age_bmi": age * bmi_ge30, "age_egfr": age * egfr_lt60,
        "const": np.ones_like(age),
    }
    if variant == "hba1c":
        known = ~np.isnan(x["hba1c"])
        centred = np.where(known, x["hba1c"] - 5.3, 0.0)
        t.update(hba1c_dm=centred * dm, hba1c_no_dm=centred * (1.0 - dm), hba1c_missing=(~known).astype(float))
    elif variant == "uacr":
        known = ~np.isnan(x["uacr"])
        t.update(ln_uacr=np.where(known, np.log(np.where(known, x["uacr"], 1.0)), 0.0), uacr_missing=(~known).astype(float))
    return t


def prevent_core(x: Mapping[str, np.ndarray], male: np.ndarray, horizon: int = 10, variant: str = "base") -> dict[str, np.ndarray]:
    """Risk fraction per outcome (total_cvd, ascvd, heart_failure) for arrays of patients
    (no validation; ages outside 30-79 give NaN)."""
    if variant not in VARIANTS or horizon not in HORIZONS:
        raise ValueError(f"PREVENT: variant must be one of {VARIANTS} and horizon one of {HORIZONS}, got {variant!r}, {horizon!r}")
    names, coef = COEFFICIENTS[(variant, horizon)]
    t = prevent_terms(x, horizon, variant)
    design = np.stack([np.asarray(t[name], dtype=float) for name in names], axis=-1)
    male = np.asarray(male, dtype=bool)
    defined = (x["age"] >= AGE_RANGE[0]) & (x["age"] <= AGE_RANGE[1])
    out = {}
    for outcome in OUTCOMES:
        lp = np.where(male, design @ coef[(outcome, "male")], design @ coef[(outcome, "female")])
        out[outcome] = np.where(defined, 1.0 / (1.0 + np.exp(-lp)), np.nan)
    return out
