"""Feature views a fraud analyst would define on the Fraud Detection Handbook's simulated transactions.

Customer spending behaviour over 1, 7 and 30 days, and terminal risk from fraud labels that become known a week
after the transaction (the handbook's delay period): windows of 1, 7 and 30 days that end 7 days before the
transaction being scored.
"""

import os

import tally as tl

DATA = os.environ.get("HANDBOOK_DATA", "../shared/data/fraud-handbook")

customer = tl.Entity("customer", keys=["CUSTOMER_ID"], description="A card holder of the simulation.")
terminal = tl.Entity("terminal", keys=["TERMINAL_ID"], description="A merchant point of sale.")

transactions = tl.Source(
    "transactions", path=f"{DATA}/transactions_*.csv.gz", format="csv", timestamp="TX_DATETIME", id="TRANSACTION_ID",
    checks=[tl.Check.ge("TX_AMOUNT", 0), tl.Check.isin("TX_FRAUD", [0, 1])],
    description="1.75 M simulated card transactions, 2018-04-01 .. 2018-09-30, naive times read as UTC.",
)

customer_spending = tl.FeatureView(
    name="customer_spending", entity=customer, source=transactions, version=1,
    description="How much and how often the customer spends (the handbook's customer features).",
    aggregations=[
        tl.Aggregation("count", windows=[tl.Window(w, closed="right") for w in ("1d", "7d", "30d")],
                       name="nb_tx", description="transactions in the window, this one included"),
        tl.Aggregation("mean", column="TX_AMOUNT", windows=[tl.Window(w, closed="right") for w in ("1d", "7d", "30d")],
                       name="avg_amount", description="mean amount in the window, this one included"),
    ],
)

terminal_risk = tl.FeatureView(
    name="terminal_risk", entity=terminal, source=transactions, version=1,
    description="Frauds on the terminal, counted only once labels are known (7 days after the transaction).",
    aggregations=[
        tl.Aggregation("count", windows=[tl.Window(w, delay="7d") for w in ("1d", "7d", "30d")], name="nb_tx",
                       description="transactions in the window that ends 7 days ago"),
        tl.Aggregation("sum", column="TX_FRAUD", windows=[tl.Window(w, delay="7d") for w in ("1d", "7d", "30d")],
                       name="nb_fraud", description="of which fraudulent"),
    ],
)

# The handbook's terminal risk score, frauds / transactions of the delayed window (0 for a terminal with none),
# computed on each training row after the joins.
terminal_risk_1d, terminal_risk_7d, terminal_risk_30d = (
    tl.Derived(f"terminal_risk_{w}",
               f"coalesce(try_divide(terminal_risk__nb_fraud_{w}_delay_7d, terminal_risk__nb_tx_{w}_delay_7d), 0.0)",
               inputs=[f"terminal_risk:nb_fraud_{w}_delay_7d", f"terminal_risk:nb_tx_{w}_delay_7d"],
               description=f"the handbook's risk score over {w}, labels known 7 days later")
    for w in ("1d", "7d", "30d"))

handbook = tl.FeatureSet(
    "handbook", version=1, description="the handbook's features: customer spending, terminal counts and risk scores",
    features=["customer_spending", "terminal_risk", "terminal_risk_1d", "terminal_risk_7d", "terminal_risk_30d"])
