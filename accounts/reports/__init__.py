"""Reports over the accounts: the trial balance."""
