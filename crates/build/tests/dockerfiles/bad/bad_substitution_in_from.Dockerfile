FROM ${}
