"""A realistic next monthly export of the Telco data: the same customers a month older, in another row order."""
import numpy as np
import pandas as pd


def _money(x: float) -> str:
    "A charge written as the export writes it: up to two decimals, no trailing zeros (e.g. '29.85', '1889.5', '108')."
    return f"{x:.2f}".rstrip("0").rstrip(".")


def month_older(raw: pd.DataFrame, # The raw Telco frame, every cell a string (`read_raw`)
                months: int = 1, # How many months later
                seed: int = 0, # Seed of the row order and of the churners removed
                drop_churners: int = 0, # How many churned customers leave the export (they are gone by then)
               ) -> pd.DataFrame:
    "The export `months` later: same customers, tenure + months, TotalCharges + months × MonthlyCharges (as text), rows shuffled."
    rng = np.random.default_rng(seed)
    out = raw.copy()
    out["tenure"] = (out["tenure"].astype(int) + months).astype(str)
    total = pd.to_numeric(out["TotalCharges"].str.strip().replace("", "0"))
    out["TotalCharges"] = [_money(t + months * m) for t, m in zip(total, out["MonthlyCharges"].astype(float))]
    if drop_churners:
        gone = rng.choice(np.flatnonzero((out["Churn"] == "Yes").to_numpy()), drop_churners, replace=False)
        out = out.drop(out.index[gone])
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)
