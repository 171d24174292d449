"""Everything that talks to the stock exchange's services: its execution feed's client."""
