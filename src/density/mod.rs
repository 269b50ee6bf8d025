//! One-class density estimators on learned features: Gaussian (Ledoit-Wolf / reg_covar) and KDE.
