"""Implementation of :mod:`hub.demo.outside_record` (a SYNTHETIC outside-EHR record).

``cancers`` holds the cancer profiles (data), ``shapes`` the code systems and small FHIR
shapes, ``writer`` the record's timeline, child and entry list, ``people`` the actors and
encounters, ``care`` diagnosis and treatment, ``visits`` the labs and vital signs that fill
the record up to its size.  Import from :mod:`hub.demo.outside_record`.
"""
