"""Expense approval: validate -> human review (finance) -> exclusive on the decision -> pay or notify."""
