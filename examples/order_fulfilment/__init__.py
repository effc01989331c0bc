"""Order fulfilment: reserve stock and charge the card in parallel, join, wait, ship."""
